"""Policy and value networks (Dactyl Table 10): input normalisation → Dense 1024 ReLU → LSTM 512.

The policy head gives categorical logits [n_actuators, bins]; the value head a scalar. Both nets
keep their LSTM state explicit (``(h, c)`` in, ``(h, c)`` out) so the ONNX graph, the PPO
trainer and the runtime all handle state the same way. The running mean/std of the inputs are
buffers, so the exported ONNX graph holds them as constants (``dex.obs_norm = in_graph``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

DENSE = 1024
LSTM_HIDDEN = 512

State = tuple[torch.Tensor, torch.Tensor]


class RunningNorm(nn.Module):
    """Running mean/variance normaliser (parallel-variance update); clips to ±clip std."""

    def __init__(self, size: int, clip: float = 5.0, eps: float = 1e-4) -> None:
        super().__init__()
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.mean)
        if x.shape[0] == 0:
            return
        b_mean, b_var, b_n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        n = float(self.count)
        tot = n + b_n
        delta = b_mean - self.mean
        self.mean += delta * b_n / tot
        m2 = self.var * n + b_var * b_n + delta.square() * n * b_n / tot
        self.var.copy_(m2 / tot)
        self.count.fill_(tot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean) / torch.sqrt(self.var + self.eps)
        return torch.clamp(y, -self.clip, self.clip)


class RecurrentNet(nn.Module):
    """norm → Dense(1024) ReLU → LSTM(512) → linear head of ``out_size``."""

    def __init__(self, in_size: int, out_size: int, dense: int = DENSE,
                 hidden: int = LSTM_HIDDEN) -> None:
        super().__init__()
        self.in_size, self.out_size, self.hidden = in_size, out_size, hidden
        self.norm = RunningNorm(in_size)
        self.dense = nn.Linear(in_size, dense)
        self.lstm = nn.LSTM(dense, hidden)
        self.head = nn.Linear(hidden, out_size)

    def initial_state(self, batch: int) -> State:
        z = torch.zeros(1, batch, self.hidden)
        return z, z.clone()

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One time step: x [B, in] → out [B, out_size], new state."""
        z = torch.relu(self.dense(self.norm(x)))
        y, (h, c) = self.lstm(z.unsqueeze(0), state)
        return self.head(y[0]), (h, c)

    def cell_step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """``step`` with the LSTM cell written out (nn.LSTM's gate order i, f, g, o and its
        weights; equal within float rounding). It takes the BLAS path whatever
        ``torch.backends.mkldnn`` says: the PPO trainer turns oneDNN on for its bf16 update,
        where one fp32 step of nn.LSTM would then take 2.5x as long in the rollout beside it."""
        z = torch.relu(self.dense(self.norm(x)))
        lstm = self.lstm
        gates = torch.addmm(lstm.bias_ih_l0, z, lstm.weight_ih_l0.t())
        gates = torch.addmm(gates + lstm.bias_hh_l0, state[0][0], lstm.weight_hh_l0.t())
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * state[1][0] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h), (h.unsqueeze(0), c.unsqueeze(0))

    def sequence(self, x: torch.Tensor, state: State,
                 starts: torch.Tensor) -> torch.Tensor:
        """BPTT over a chunk: x [T, B, in]; ``starts`` [T, B] is 1 where an episode begins at t
        (the state is zeroed before that step). Returns [T, B, out_size].

        The LSTM runs fused over each stretch between time steps where some episode starts
        (one call when starts are only at t = 0, as in the teacher → student windows): the
        same numbers as stepping one at a time, several times faster."""
        z = torch.relu(self.dense(self.norm(x)))
        h, c = state
        cuts = [0, *(int(t) for t in torch.nonzero(starts.any(-1)).flatten() if t > 0),
                x.shape[0]]
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            keep = (1.0 - starts[a]).view(1, -1, 1)
            y, (h, c) = self.lstm(z[a:b], (h * keep, c * keep))
            outs.append(y)
        return self.head(torch.cat(outs))


class PolicyNet(RecurrentNet):
    """Categorical policy: logits [B, n_actuators, bins]."""

    def __init__(self, obs_size: int, n_actuators: int, bins: int, hold_prior: float = 0.0,
                 **kw: int) -> None:
        super().__init__(obs_size, n_actuators * bins, **kw)
        self.n_actuators, self.bins = n_actuators, bins
        nn.init.orthogonal_(self.head.weight, gain=0.01)  # near state-independent at start
        nn.init.zeros_(self.head.bias)
        if hold_prior > 0.0:
            # Start near "hold still": the middle (zero-delta) bin gets probability hold_prior
            # per actuator. A uniform start moves all 20 actuators at random every step and
            # throws the cube off the palm before any useful signal is collected.
            if not 0.0 < hold_prior < 1.0:
                raise ValueError(f"hold_prior must be in (0, 1), got {hold_prior}")
            logit = math.log(hold_prior * (bins - 1) / (1.0 - hold_prior))
            with torch.no_grad():
                self.head.bias.view(n_actuators, bins)[:, bins // 2] = logit

    def logits(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(*flat.shape[:-1], self.n_actuators, self.bins)


class ValueNet(RecurrentNet):
    """State value from the asymmetric value observation: [B] scalars."""

    def __init__(self, obs_size: int, **kw: int) -> None:
        super().__init__(obs_size, 1, **kw)


class PolicyExport(nn.Module):
    """The graph that goes to ONNX: (obs [B,22], h_in, c_in) → (logits [B,20,11], h_out, c_out)."""

    def __init__(self, policy: PolicyNet) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, h_in: torch.Tensor,
                c_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat, (h, c) = self.policy.step(obs, (h_in, c_in))
        return self.policy.logits(flat), h, c
