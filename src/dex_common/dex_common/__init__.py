"""Pure cores shared by the nodes: time synchronizer, rotations, trial rules, model contract, diagnostics."""
