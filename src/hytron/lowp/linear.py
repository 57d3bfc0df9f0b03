"""QuantLinear: an nn.Linear whose three GEMMs (forward, input-grad, weight-grad) run in a recipe's formats.

    forward  y  = Q_a(x) Q_w(W)ᵀ                     x: (M, K) tokens x in-features, W: (N, K)
    dgrad    dx = Q_g(dy) Q_w'(W)                    dy: (M, N); W' quantized along N (= Q_w for 16x16)
    wgrad    dW = Q_g(H(dyᵀ)) Q_a(H(xᵀ))ᵀ             along the token dim M; H = tiled RHT or identity

Every operand is quantized from the high-precision tensor (never from re-transposed quantized data) and
the GEMM accumulates in fp32 on dequantized values (exact products; only the summation order differs
from a tensor-core kernel). The weight is quantized once per weight version (`weight._version` moves on
every in-place optimizer update), so gradient-accumulation micro-steps reuse it. Identity specs pass
tensors through untouched, so an all-identity QuantLinear is bit-identical to nn.Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hytron.lowp.hadamard import rht, rht_matrix
from hytron.lowp.native import fp8_matmul_t, native_fp8_ok
from hytron.lowp.quantize import AmaxHistory, Quantized, quantize
from hytron.lowp.recipe import PrecisionRecipe, QuantSpec


class OperandQuantizer:
    """Quantizes one operand role with one spec; owns the amax history when the spec uses delayed scaling."""

    def __init__(self, spec: QuantSpec):
        self.spec = spec
        self.history = AmaxHistory(spec.amax_history, spec.fmt) if spec.scaling == "delayed" else None

    def quantize(self, x: torch.Tensor, generator: torch.Generator | None) -> Quantized:
        s = self.spec
        if self.history is not None:
            return self.history.quantize(x, s.rounding, generator)
        return quantize(x, s.fmt, s.block, s.rounding, generator, mx_scale=s.mx_scale)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The fake-quantized operand (fp32), or x itself for the identity spec."""
        if self.spec.fmt == "none":
            return x
        if self.spec.fmt == "bf16":
            return x.to(torch.bfloat16).to(torch.float32)
        return self.quantize(x, generator).dequantize()


def _bf16(t: torch.Tensor) -> torch.Tensor:
    """t rounded to bf16 (RNE) and held in fp32: a bf16 GEMM operand for an fp32-accumulating matmul."""
    return t.to(torch.bfloat16).to(torch.float32)


def _matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ bᵀ; mixed dtypes (a quantized fp32 operand against an untouched bf16 one) meet in fp32."""
    if a.dtype != b.dtype:
        a, b = a.float(), b.float()
    return a.mm(b.t())


class _QuantLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        n, k = weight.shape
        x2 = x.reshape(-1, k)  # (M, K)
        ctx.layer, ctx.x_shape, ctx.has_bias = layer, x.shape, bias is not None
        ctx.save_for_backward(x2, weight)
        if layer.identity_forward or (layer.hp_forward and not layer.hp_bf16):  # nn.Linear's kernel on x's shape
            return F.linear(x, weight, bias)
        if layer.hp_forward:  # high precision = bf16 operands, fp32 accumulation
            with torch.autocast(x.device.type, enabled=False):
                y = F.linear(_bf16(x), _bf16(weight), None if bias is None else bias.float())
            return y.to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):  # emulated GEMMs stay fp32 under bf16 autocast
            y2 = layer._fprop(x2)
        if bias is not None:
            y2 = y2 + bias.to(y2.dtype)
        return y2.reshape(*x.shape[:-1], n).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x2, weight = ctx.saved_tensors
        layer = ctx.layer
        dy2 = dy.reshape(-1, weight.shape[0])  # (M, N)
        dx = dw = db = None
        with torch.autocast(dy.device.type, enabled=False):
            dx, dw = _QuantLinearFn._grads(ctx, dy2, x2, weight, layer)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy2.sum(0).to(weight.dtype)
        return dx, dw, db, None

    @staticmethod
    def _grads(ctx, dy2, x2, weight, layer):
        dx = dw = None
        hp = _bf16 if layer.hp_bf16 else (lambda t: t)  # high-precision operands
        if ctx.needs_input_grad[0]:
            dx2 = hp(dy2).mm(hp(weight).to(hp(dy2).dtype)) if layer.hp_backward else layer._dgrad(dy2)
            dx = dx2.reshape(ctx.x_shape).to(x2.dtype)
        if ctx.needs_input_grad[1]:
            dw = _matmul_t(hp(dy2).t(), hp(x2).t()) if layer.hp_backward else layer._wgrad(dy2, x2)
            dw = dw.to(weight.dtype)
        return dx, dw


class QuantLinear(nn.Linear):
    """nn.Linear (same parameters, same state_dict) whose GEMMs follow a PrecisionRecipe.

    hp_forward / hp_backward switch the forward or backward GEMMs to high precision (set_high_precision).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 recipe: PrecisionRecipe, layer_index: int = 0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._configure(recipe, layer_index)

    @classmethod
    def from_linear(cls, linear: nn.Linear, recipe: PrecisionRecipe, layer_index: int = 0) -> QuantLinear:
        """Wrap an existing Linear, sharing its Parameter objects (optimizer and tied weights stay valid)."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.in_features, q.out_features = linear.in_features, linear.out_features
        q.weight = linear.weight
        q.bias = linear.bias
        q._configure(recipe, layer_index)
        return q

    def _configure(self, recipe: PrecisionRecipe, layer_index: int) -> None:
        self.recipe, self.layer_index = recipe, layer_index
        self.q_weight = OperandQuantizer(recipe.weight)          # forward, along K
        self.q_weight_t = OperandQuantizer(recipe.weight)        # dgrad, along N (unless 16x16 / per-tensor)
        self.q_act = OperandQuantizer(recipe.activation)         # forward, along K
        self.q_act_t = OperandQuantizer(recipe.activation)       # wgrad, along M
        self.q_grad = OperandQuantizer(recipe.gradient)          # dgrad, along N
        self.q_grad_t = OperandQuantizer(recipe.gradient)        # wgrad, along M
        self.hp_forward = self.hp_backward = False
        self.hp_bf16 = recipe.high_precision == "bf16"
        self.identity_forward = recipe.weight.identity and recipe.activation.identity
        self.weight_quantizations = 0  # how many times the weight was quantized (once per weight version)
        self._cache_key: tuple | None = None
        self._cache: dict[str, torch.Tensor | Quantized] = {}
        self._generators: dict[torch.device, torch.Generator] = {}
        self._rht = rht_matrix(recipe.rht_size, recipe.rht_seed) if recipe.wgrad_rht else None

    # ------------------------------------------------------------------------------------------ helpers
    def generator(self, device: torch.device) -> torch.Generator:
        """This layer's stochastic-rounding stream on `device`, seeded from (recipe.seed, layer_index)."""
        if device not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.recipe.seed * 1_000_003 + self.layer_index)
            self._generators[device] = g
        return self._generators[device]

    def _rng(self, spec: QuantSpec, device: torch.device) -> torch.Generator | None:
        return self.generator(device) if spec.rounding == "sr" else None

    def _native(self, device: torch.device) -> bool:
        """Native FP8 GEMMs: a CUDA device and a recipe whose three operands are all per-tensor FP8."""
        fp8 = all(s.fmt in ("e4m3", "e5m2") for s in (self.recipe.weight, self.recipe.activation,
                                                         self.recipe.gradient))
        return self.recipe.native_fp8 and fp8 and device.type == "cuda"

    def _weight_symmetric(self) -> bool:
        """Quantizing W along K or along N gives the same values: per-tensor, bf16/identity, 16x16 tiles."""
        spec = self.recipe.weight
        return spec.block is None or spec.block[0] == spec.block[1]

    def quantized_weight(self, role: str) -> torch.Tensor | Quantized:
        """The cached quantized weight for 'fprop' (N, K) or 'dgrad' (as (K, N), blocks along N).

        Recomputed only when the weight changed (its version counter or storage moved).
        """
        w = self.weight
        key = (w._version, w.data_ptr(), w.dtype, w.device)
        if key != self._cache_key:
            self._cache_key, self._cache = key, {}
            self.weight_quantizations += 1
        if role not in self._cache:
            native = self._native(w.device)
            wd = w.detach()
            if role == "dgrad" and self._weight_symmetric():
                fprop = self.quantized_weight("fprop")
                self._cache[role] = fprop if isinstance(fprop, Quantized) else fprop.t()
            elif role == "fprop":
                self._cache[role] = self.q_weight.quantize(wd, None) if native else self.q_weight(wd, None)
            else:  # 1-D blocks: the dgrad operand is blocked along N, quantized afresh from W (K, N)
                self._cache[role] = self.q_weight_t(wd.t(), None)
        return self._cache[role]

    # ---------------------------------------------------------------------------------------- the GEMMs
    def _fprop(self, x2: torch.Tensor) -> torch.Tensor:
        w = self.quantized_weight("fprop")
        if isinstance(w, Quantized):
            xq = self.q_act.quantize(x2, self._rng(self.recipe.activation, x2.device))
            if native_fp8_ok(xq, w):
                return fp8_matmul_t(xq, w)
            return _matmul_t(xq.dequantize(), w.dequantize())
        return _matmul_t(self.q_act(x2, self._rng(self.recipe.activation, x2.device)), w)

    def _dgrad(self, dy2: torch.Tensor) -> torch.Tensor:
        g = self._rng(self.recipe.gradient, dy2.device)
        w = self.quantized_weight("dgrad")
        if isinstance(w, Quantized):  # native FP8: dx = dy W = dy (Wᵀ)ᵀ with Wᵀ (K, N) per-tensor
            dyq = self.q_grad.quantize(dy2, g)
            values_t = w.values.t().contiguous()
            wt = Quantized(w.fmt, values_t, None, w.tensor_scale, (1, 1), values_t.shape)
            if native_fp8_ok(dyq, wt):
                return fp8_matmul_t(dyq, wt)
            return _matmul_t(dyq.dequantize(), wt.dequantize())
        return _matmul_t(self.q_grad(dy2, g), w)

    def _wgrad(self, dy2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        g, ga = self._rng(self.recipe.gradient, dy2.device), self._rng(self.recipe.activation, dy2.device)
        dyt, xt = dy2.t(), x2.t()  # (N, M), (K, M): contraction over tokens M
        if self._rht is not None:  # same R on both operands, tokens zero-padded to whole tiles
            dyt, xt = rht(dyt, self._rht), rht(xt, self._rht)
        if self._native(dy2.device):
            dyq, xq = self.q_grad_t.quantize(dyt, g), self.q_act_t.quantize(xt, ga)
            if native_fp8_ok(dyq, xq):
                return fp8_matmul_t(dyq, xq)
            return _matmul_t(dyq.dequantize(), xq.dequantize())
        return _matmul_t(self.q_grad_t(dyt, g), self.q_act_t(xt, ga))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuantLinearFn.apply(x, self.weight, self.bias, self)

    _ROLES = ("q_weight", "q_weight_t", "q_act", "q_act_t", "q_grad", "q_grad_t")

    def precision_state(self) -> dict:
        """What state_dict() lacks for an exact resume: SR generator states, amax histories, switch flags."""
        amax = {}
        for role in self._ROLES:
            h = getattr(self, role).history
            if h is not None and h.history is not None:
                amax[role] = {"history": h.history.detach().cpu().clone(), "steps": h.steps}
        return {"generators": {str(d): g.get_state() for d, g in self._generators.items()}, "amax": amax,
                "hp_forward": self.hp_forward, "hp_backward": self.hp_backward}

    def load_precision_state(self, state: dict) -> None:
        for device, g_state in state["generators"].items():
            self.generator(torch.device(device)).set_state(g_state)
        for role, h in state["amax"].items():
            history = getattr(self, role).history
            if history is None:
                raise ValueError(f"precision state has an amax history for {role}, but this layer's recipe "
                                 f"{self.recipe.name!r} does not use delayed scaling there")
            history.history, history.steps = h["history"].to(self.weight.device), h["steps"]
        self.hp_forward, self.hp_backward = state["hp_forward"], state["hp_backward"]

    def extra_repr(self) -> str:
        hp = [p for p, on in (("forward", self.hp_forward), ("backward", self.hp_backward)) if on]
        return f"{super().extra_repr()}, recipe={self.recipe.name}" + (f", high_precision={hp}" if hp else "")
