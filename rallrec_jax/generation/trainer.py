"""The LoRA train step of the general LLM M_G (paper-spec 3.2), sharded over a (data, fsdp, tensor) mesh: the
loss, the optimizer and `Trainer`, which jits the step and the validation pass. The loop around it (resume,
validation, early stopping, checkpoints) is `finetune.py`.

Gradient accumulation happens inside ONE jitted step: the effective batch [E, L] arrives sharded over the
data axes, is viewed as [n_micro, micro, L] (rows interleaved so that every micro-batch stays spread over
all data-parallel devices, no communication) and `lax.scan` sums per-micro-batch gradients of the summed
answer cross-entropy; the sum is divided by the number of answer tokens of the whole effective batch. The
update therefore equals a single pass over E rows whatever the micro-batch size or the mesh, and the whole
step (forward, backward, accumulation, AdamW) is one XLA program with explicit in/out shardings and a donated
train state (LoRA params + optimizer state; the frozen base is an input, never copied).

The loss needs logits at the answer positions only: the decoder's final hidden states are gathered at the
A positions that predict answer tokens and only those go through the vocab head ([B, A, V], not [B, L, V]);
that training forward lives beside the model, in llm/training_forward.py.

Dropout: every micro-batch's key is fold_in(seed, step, micro), set into the model's RNG streams inside the
step (`reseeded`), so a step is a function of its inputs and a resumed run replays it exactly.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rallrec_jax import metrics, parallel
from rallrec_jax.data import batching
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation.batches import BATCH_KEYS, make_batch
from rallrec_jax.llm.model import REMAT, Llm
from rallrec_jax.llm.scoring import yes_probability_from_logits
from rallrec_jax.llm.sharding import param_shardings, shard_model
from rallrec_jax.llm.tokenizer import bucket_length
from rallrec_jax.llm.training_forward import answer_logits


# ----------------------------------------------------------------------------- loss and settings
def token_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Summed weighted CE: sum_{b,a} w[b,a] * (logsumexp(logits[b,a]) - logits[b,a,targets[b,a]]).

    logits [B, A, V] float32, targets [B, A] int, weights [B, A] -> scalar."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)  # [B, A]
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]  # [B, A]
    return jnp.sum((logz - picked) * weights)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    learning_rate: float = 5e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    effective_batch: int = 256
    micro_batch: int = 4
    seed: int = 42
    min_bucket: int = 16
    eval_batch: int = 8
    double_softmax: bool = False  # for the validation AUC of P(Yes)
    remat: str = "attention"  # per-block rematerialisation in the train step: none | attention | full

    def __post_init__(self):
        for name in ("effective_batch", "micro_batch", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"finetune.{name}={getattr(self, name)} must be >= 1")
        if self.effective_batch % self.micro_batch:
            raise ValueError(f"finetune.effective_batch={self.effective_batch} is not a multiple of "
                             f"finetune.micro_batch={self.micro_batch}")
        if self.remat not in REMAT:
            raise ValueError(f"finetune.remat={self.remat!r} must be one of {REMAT}")
        if not self.learning_rate > 0:
            raise ValueError(f"finetune.learning_rate={self.learning_rate} must be > 0")

    @property
    def num_micro(self) -> int:
        return self.effective_batch // self.micro_batch


def lr_schedule(settings: TrainSettings, total_steps: int) -> optax.Schedule:
    """Linear decay from lr to 0 over `total_steps`, no warm-up (HF `linear`)."""
    return optax.linear_schedule(settings.learning_rate, 0.0, max(int(total_steps), 1))


def optimizer(settings: TrainSettings, total_steps: int) -> optax.GradientTransformation:
    """HF Trainer's AdamW (decoupled weight decay) on the linear schedule."""
    return optax.adamw(lr_schedule(settings, total_steps), b1=settings.b1, b2=settings.b2, eps=settings.eps,
                       weight_decay=settings.weight_decay)


# ----------------------------------------------------------------------------- the step
def reseeded(rng_state: nnx.State, key: jax.Array) -> nnx.State:
    """The model's RNG streams (dropout) with key_i = fold_in(key, i) and counts 0: a fresh, deterministic
    draw for every micro-batch, independent of how many steps ran before (so resuming is exact). A stacked
    stream (one key per layer, [N]) gets fold_in(key_i, layer) per layer."""
    leaves, treedef = jax.tree.flatten(rng_state)

    def one(i, x):
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jnp.zeros_like(x)
        k = jax.random.fold_in(key, i)
        if not x.shape:
            return k
        return jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(x.size)).reshape(x.shape)

    return jax.tree.unflatten(treedef, [one(i, x) for i, x in enumerate(leaves)])


class Trainer:
    """Holds the split model (LoRA params / frozen rest), the optimizer and the two jitted programs.

    The train state is (lora, opt_state): the only things that change, donated to every step."""

    def __init__(self, model: Llm, settings: TrainSettings, total_steps: int, mesh: Mesh,
                 yes_no: tuple[int, int] | None = None):
        if not jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
            raise ValueError("the model has no LoRA adapters: call lora.apply_lora first")
        self.settings, self.mesh, self.total_steps = settings, mesh, int(total_steps)
        dp = parallel.data_parallel_size(mesh)
        if settings.micro_batch % dp:
            raise ValueError(f"finetune.micro_batch={settings.micro_batch} must be a multiple of the "
                             f"{dp} data-parallel devices of the mesh {dict(mesh.shape)}")
        if settings.eval_batch % dp:
            raise ValueError(f"finetune.eval_batch={settings.eval_batch} must be a multiple of the "
                             f"{dp} data-parallel devices of the mesh {dict(mesh.shape)}")
        self.model = shard_model(model, mesh)
        self.yes_no = yes_no
        model.train()
        self.graphdef_train = nnx.graphdef(model)
        model.eval()
        self.graphdef_eval, lora, rngs, rest = nnx.split(model, nnx.LoRAParam, nnx.RngState, ...)
        self.frozen = (rngs, rest)  # not trained: RNG stream state (re-keyed every micro-batch) and the base
        self.lora_sharding = param_shardings(lora, mesh)
        self.frozen_sharding = jax.tree.map(lambda x: x.sharding, self.frozen)
        self.tx = optimizer(settings, total_steps)
        self.schedule = lr_schedule(settings, total_steps)
        replicated = NamedSharding(mesh, PartitionSpec())
        self.replicated = replicated
        abstract_opt = jax.eval_shape(self.tx.init, lora)
        self.opt_sharding = optax.tree_map_params(
            self.tx, lambda _, s: s, abstract_opt, self.lora_sharding,
            transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, nnx.Variable))
        self._init_opt = jax.jit(self.tx.init, out_shardings=self.opt_sharding)
        self.batch_sharding = {k: parallel.batch_sharding(mesh, 2) for k in BATCH_KEYS}
        self._step = jax.jit(
            self._train_step,
            in_shardings=(self.lora_sharding, self.opt_sharding, self.frozen_sharding, self.batch_sharding,
                          replicated),
            out_shardings=(self.lora_sharding, self.opt_sharding, replicated),
            donate_argnums=(0, 1))
        self._eval = jax.jit(
            self._eval_step,
            in_shardings=(self.lora_sharding, self.frozen_sharding, self.batch_sharding),
            out_shardings=parallel.batch_sharding(mesh, 2))
        self._copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=self.lora_sharding)

    # ------------------------------------------------------------------ state
    def initial_state(self) -> tuple[nnx.State, optax.OptState]:
        # A copy: the step donates its train state, and the model's own arrays must stay valid.
        lora = self._copy(nnx.state(self.model, nnx.LoRAParam))
        return lora, self._init_opt(lora)

    def abstract_state(self):
        lora = jax.eval_shape(lambda: nnx.state(self.model, nnx.LoRAParam))
        return lora, jax.eval_shape(self.tx.init, lora)

    # ------------------------------------------------------------------ jitted bodies
    def _loss_sum(self, lora, frozen, batch, key):
        rngs, rest = frozen
        model = nnx.merge(self.graphdef_train, lora, reseeded(rngs, key), rest)
        logits = answer_logits(model, batch, self.settings.remat)  # [m, A, V]
        return token_cross_entropy(logits, batch["ans_tok"], batch["ans_w"])

    def _train_step(self, lora, opt_state, frozen, batch, step):
        s = self.settings
        m, n = s.micro_batch, s.num_micro

        def micro(x):  # [E, ...] -> [n, m, ...]; row r -> (r % n, r // n): each device's rows stay local
            y = x.reshape((m, n) + x.shape[1:]).swapaxes(0, 1)
            spec = parallel.named_sharding(self.mesh, (None, "batch") + (None,) * (y.ndim - 2))
            return jax.lax.with_sharding_constraint(y, spec)

        micro_batches = {k: micro(v) for k, v in batch.items()}
        base = jax.random.fold_in(jax.random.key(s.seed), step)
        grad_fn = jax.value_and_grad(self._loss_sum)

        def body(carry, xs):
            g_acc, ce_acc, w_acc = carry
            mb, j = xs
            ce, g = grad_fn(lora, frozen, mb, jax.random.fold_in(base, j))
            return (jax.tree.map(jnp.add, g_acc, g), ce_acc + ce, w_acc + jnp.sum(mb["ans_w"])), None

        zeros = jax.tree.map(jnp.zeros_like, lora)
        (g, ce, w), _ = jax.lax.scan(body, (zeros, jnp.float32(0), jnp.float32(0)),
                                     (micro_batches, jnp.arange(n)))
        denom = jnp.maximum(w, 1.0)
        g = jax.tree.map(lambda x: x / denom, g)
        updates, opt_state = self.tx.update(g, opt_state, lora)
        lora = optax.apply_updates(lora, updates)
        stats = {"loss": ce / denom, "answer_tokens": w, "grad_norm": optax.global_norm(g)}
        return lora, opt_state, stats

    def _eval_step(self, lora, frozen, batch):
        """Per row: [B, 3] = (summed answer CE, answer tokens, P(Yes) at the first answer position)."""
        model = nnx.merge(self.graphdef_eval, lora, *frozen)
        logits = answer_logits(model, batch)  # [B, A, V]
        lz = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, batch["ans_tok"][..., None], axis=-1)[..., 0]
        ce = jnp.sum((lz - picked) * batch["ans_w"], axis=-1)  # [B]
        w = jnp.sum(batch["ans_w"], axis=-1)
        if self.yes_no is None:
            p = jnp.full_like(ce, jnp.nan)
        else:
            p = yes_probability_from_logits(logits[:, 0], self.yes_no[0], self.yes_no[1],
                                            self.settings.double_softmax)
        return jnp.stack([ce, w, p], axis=-1)

    # ------------------------------------------------------------------ host API
    def put(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """Process-local rows -> global arrays (each process feeds its slice of the global batch)."""
        return batching.shard_batch(batch, self.mesh)

    def step(self, lora, opt_state, batch: Mapping[str, np.ndarray], step: int):
        return self._step(lora, opt_state, self.frozen, self.put(batch), jnp.int32(step))

    def evaluate(self, lora, examples: Sequence[ex_lib.Example], answer_len: int, pad_id: int) -> dict:
        """Validation answer loss and, with yes/no ids, P(Yes) metrics; batches sorted by length, bucketed."""
        eb = self.settings.eval_batch
        order = np.argsort([e.length for e in examples], kind="stable")
        rows_out = []
        procs, rank = jax.process_count(), jax.process_index()
        for start in range(0, len(order), eb):
            chunk: list = [examples[i] for i in order[start:start + eb]]
            n = len(chunk)
            chunk += [None] * (eb - n)
            length = bucket_length(max(e.length for e in chunk if e is not None), self.settings.min_bucket)
            batch = make_batch(chunk, length, answer_len, pad_id)
            local = {k: v[rank * eb // procs:(rank + 1) * eb // procs] for k, v in batch.items()}
            out = self._eval(lora, self.frozen, self.put(local))
            rows_out.append(np.asarray(multihost_utils.process_allgather(out, tiled=True))[:n]
                            if procs > 1 else np.asarray(out)[:n])
        stacked = np.concatenate(rows_out)
        result = np.empty_like(stacked)
        result[order] = stacked
        labels = np.array([e.label for e in examples])
        out = {"eval_loss": float(result[:, 0].sum() / max(result[:, 1].sum(), 1.0)), "eval_rows": len(examples)}
        if self.yes_no is not None and len(set(labels.tolist())) == 2:
            m = metrics.ctr_metrics(labels, result[:, 2])
            out.update({f"eval_{k}": v for k, v in m.items()})
        return out
