"""Engine directives applied at a step boundary, identically on every rank.

Rank 0 polls the engine; every rank joins one ``all_gather_object`` per step (a no-op payload
when there is nothing to apply), so all ranks apply the same directive at the same
``state.global_step``, ack it, and log it to ``<output_dir>/tailguard-directives.rank<R>.jsonl``.
The same exchange carries each rank's local stop (fail_closed: a step went unrecorded or the engine session
was lost, guard.Verdict), so every rank stops at the same step instead of the others waiting in DDP's next
all-reduce; `stopped` keeps (step, why) for the `TailguardStopped` that `train()` raises.

Applying one directive, its ack and its log line: actions.py. Knobs: knobs.py (what each wire name sets on a TRL
trainer, and what is refused).
"""

from __future__ import annotations

import logging
import os
import time

from .actions import ACTIONS, ALPHA_CEILING_ENV, ALPHA_CEILING_FILE, Actions  # noqa: F401 - re-exported
from .checkpoints import CheckpointKeeper, read_state
from .knobs import KNOBS, Refusal, read_knobs, set_knob, tighten_targets  # noqa: F401 - re-exported

logger = logging.getLogger("tailguard.directives")

# --- the applier ----------------------------------------------------------------------------


def _unwrap(d):
    """A ``directive`` reply or the directive inside it; None for no-ops."""
    if not isinstance(d, dict):
        return None
    if isinstance(d.get("directive"), dict) or ("directive" in d and d.get("type") == "directive"):
        d = d.get("directive")
    if not isinstance(d, dict) or d.get("action") in (None, "noop"):
        return None
    return d


class DirectiveApplier(Actions):
    """Receives, broadcasts, applies, acks and logs directives for one trainer process.

    Args:
        trainer: the TRL trainer instance (knobs, checkpoint loaders, `args.output_dir`).
        client (*optional*): an `EngineClient` (``poll_directives()``, ``send_ack(...)``); None = no engine.
        rank (`int`), world_size (`int`): this process in the trainer's own distributed group.
        fail_mode (`str`, *optional*, defaults to `"fail_open"`): `"fail_closed"` stops training when
            rank 0 loses the engine; `"fail_open"` warns and goes on.
        keeper (`CheckpointKeeper`, *optional*): protected checkpoints; made from `output_dir` if absent.
        checkpoint_every (`int`, *optional*, defaults to `0`): also save every N steps (0: the trainer's own cadence).
        lost_after_s (`float`, *optional*, defaults to `3.0`): no engine session this long = engine lost.
        keep_certified (`int`, *optional*, defaults to `2`): certified checkpoints kept from rotation (K).
        reply_wait_s (`float`, *optional*, defaults to `0.0`): rank 0 waits this long at most for the replies
            that carry the directives due at a boundary (the callback passes `log_wait_s`).
    """

    def __init__(
        self, trainer, client=None, *, rank=0, world_size=1, fail_mode="fail_open", keeper=None, checkpoint_every=0,
        lost_after_s=3.0, keep_certified=2, reply_wait_s=0.0,
    ):
        if fail_mode not in ("fail_open", "fail_closed"):
            raise ValueError(f"fail_mode must be 'fail_open' or 'fail_closed', got {fail_mode!r}")
        self.trainer = trainer
        self.checkpoint_every = int(checkpoint_every or 0)
        self.resumed_from: str | None = None
        self._rolling_back = False
        self._probe_resume(trainer)
        self.client = client
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.fail_mode = fail_mode
        out = trainer.args.output_dir
        self.keeper = keeper or CheckpointKeeper(out, keep_certified=keep_certified, is_main=self.rank == 0)
        self.log_path = os.path.join(out, f"tailguard-directives.rank{self.rank}.jsonl")
        self.alpha_ceiling: float | None = None
        self.pending: list[dict] = []  # rank 0 only: received, not yet due
        self.applied_ids: list[str] = []
        self.rollbacks = 0
        self._seen: set[str] = set()
        self._lost_warned = False
        self._down_since: float | None = None
        self.lost_after_s = float(lost_after_s)
        self.stopped: tuple[int, str] | None = None  # fail_closed: (step, why) every rank stopped at
        self.reply_wait_s = float(reply_wait_s)

    # --- persistence -------------------------------------------------------------------------

    def _probe_resume(self, trainer) -> None:
        """Remember the folder ``train(resume_from_checkpoint=...)`` loads, to restore knobs from it."""
        load = getattr(trainer, "_load_from_checkpoint", None)
        if load is None or getattr(load, "_tailguard_probe", False):
            return

        def probe(resume_from_checkpoint, *a, **kw):
            if not self._rolling_back:
                self.resumed_from = resume_from_checkpoint
            return load(resume_from_checkpoint, *a, **kw)

        probe._tailguard_probe = True
        trainer._load_from_checkpoint = probe

    def on_train_begin(self, state) -> dict | None:
        """On resume (global_step > 0), re-apply the persisted knobs and α ceiling."""
        if int(state.global_step) <= 0:
            return None
        folder = self.resumed_from or os.path.join(self.trainer.args.output_dir, f"checkpoint-{state.global_step}")
        return self.restore(folder)

    def on_save(self, state) -> dict | None:
        """After TRL saved ``checkpoint-<global_step>``: persist our state and protect the folder.

        Returns the notice for the engine (``{step, path}``) on the main process, else None.
        """
        if self.world_size > 1:
            import torch.distributed as dist  # noqa: PLC0415

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank's rng_state_<r>.pth is on disk before we link the folder
        return self.keeper.on_save(int(state.global_step), self.state())

    def state(self) -> dict:
        """What goes into ``tailguard_state.json``: live knobs, α ceiling, directive history."""
        return {
            "knobs": read_knobs(self.trainer),
            "alpha_ceiling": self.alpha_ceiling,
            "applied": self.applied_ids[-100:],
            "rollbacks": self.rollbacks,
        }

    def restore(self, resumed_from: str | None) -> dict | None:
        """Re-apply persisted knobs on resume: the run's latest state, else the checkpoint's."""
        st = read_state(self.trainer.args.output_dir) or read_state(resumed_from)
        if not st:
            return None
        changes = []
        for knob, value in (st.get("knobs") or {}).items():
            try:
                old, new = set_knob(self.trainer, knob, value)
            except Refusal as e:
                logger.warning("tailguard: not restoring %s=%r: %s", knob, value, e)
                continue
            if old != new:
                changes.append({"knob": knob, "old": old, "new": new})
        if st.get("alpha_ceiling") is not None:
            self._set_alpha_ceiling(float(st["alpha_ceiling"]))
        self.applied_ids = list(st.get("applied") or [])
        self._seen.update(self.applied_ids)
        self.rollbacks = int(st.get("rollbacks") or 0)
        self._log({"event": "restore", "step": st.get("step"), "changes": changes, "from": st.get("step")})
        return st

    # --- the step boundary -------------------------------------------------------------------

    def on_step_end(self, state, control, local_stop: str | None = None):
        """Join the step's exchange, apply what is due at ``state.global_step``; returns ``control``.

        ``local_stop``: why this rank must stop (fail_closed), or None; any rank's reason stops all ranks.
        """
        step = int(state.global_step)
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            control.should_save = True  # the cadence the engine certifies from
        payload = self._rank0_payload(step) if self.rank == 0 else None
        payload, stops = self._exchange(payload, local_stop)
        if stops:
            control.should_training_stop = True
            self.stopped = self.stopped or (step, "; ".join(f"rank {r}: {why}" for r, why in sorted(stops.items())))
            logger.error("tailguard: fail_closed: stopping every rank at step %d: %s", step, stops)
            self._log({"event": "rank_stop", "step": step, "reasons": {str(r): why for r, why in stops.items()}, "stop": True})
        if payload.get("lost"):
            self._on_engine_lost(step, control, payload["lost"])
        for d in payload.get("apply", ()):
            self.apply(d, step, control)
        return control

    def _rank0_payload(self, step: int) -> dict:
        if self.client is not None:
            self._await_replies(step)
            try:
                received = self.client.poll_directives()
            except Exception as e:  # the monitor must not take the trainer down
                logger.warning("tailguard: poll_directives failed: %s", e)
                received = []
            for raw in received or ():
                self._note_certified(raw)
                d = _unwrap(raw)
                if d is None:
                    continue
                did = str(d.get("id", ""))
                if did in self._seen:
                    continue
                self._seen.add(did)
                self.pending.append(d)
        due = [d for d in self.pending if int(d.get("apply_at_step", step)) <= step]
        self.pending = [d for d in self.pending if d not in due]
        return {"apply": due, "lost": self._engine_lost()}

    def _await_replies(self, step: int) -> None:
        """The contract's client rule: before applying at boundary b, wait (bounded by `reply_wait_s`) for the
        replies to steps ≤ b − D, D = `welcome.directive_lag`; a directive due at b is in one of them."""
        wait = getattr(self.client, "wait_answered", None)
        if wait is None or self.reply_wait_s <= 0:
            return
        lag = int(((getattr(self.client, "welcome", None) or {}).get("directive_lag")) or 1)
        try:
            wait(step - lag, self.reply_wait_s)
        except Exception as e:  # the monitor must not take the trainer down
            logger.warning("tailguard: waiting for the engine's replies failed: %s", e)

    def _note_certified(self, raw) -> None:
        """The engine's verdicts on checkpoints (no-op params ``certified_checkpoints``, ``rejected_checkpoints``)."""
        d = raw.get("directive", raw) if isinstance(raw, dict) else None
        params = d.get("params") if isinstance(d, dict) else None
        if isinstance(params, dict) and isinstance(params.get("certified_checkpoints"), list):
            self.keeper.mark_certified(params["certified_checkpoints"])
        if isinstance(params, dict) and isinstance(params.get("rejected_checkpoints"), list):
            self.keeper.mark_rejected(params["rejected_checkpoints"], at_step=d.get("step"))

    def step_extras(self, client) -> dict:
        """Extra ``send_step`` arguments: one pending checkpoint notice (``checkpoint={step, path}``).

        Sent only when the client accepts a ``checkpoint`` argument; otherwise the notices wait.
        """
        if client is None or not self.keeper._notices:
            return {}
        try:
            import inspect  # noqa: PLC0415

            if "checkpoint" not in inspect.signature(client.send_step).parameters:
                return {}
        except (TypeError, ValueError):
            return {}
        return {"checkpoint": self.keeper._notices.pop(0)}

    def _engine_lost(self) -> str | None:
        c = self.client
        if c is None:
            return None
        probe = getattr(c, "engine_lost", None)
        if probe is not None:  # an explicit probe wins (tests, custom clients)
            try:
                lost = probe() if callable(probe) else probe
            except Exception as e:
                lost = str(e)
            return (lost if isinstance(lost, str) else "E_ENGINE_LOST: engine unreachable") if lost else None
        # EngineClient: no session (welcome) for longer than lost_after_s, counted from the first check.
        now = time.monotonic()
        if getattr(c, "connected", True):
            self._down_since = None
            return None
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since >= self.lost_after_s:
            return f"E_ENGINE_LOST: no engine session at {getattr(c, 'endpoint', '?')} for {now - self._down_since:.1f}s"
        return None

    def _exchange(self, payload, local_stop: str | None) -> tuple[dict, dict]:
        """One collective per step: rank 0's payload to every rank, every rank's stop reason to all."""
        stops = {self.rank: local_stop} if local_stop else {}
        if self.world_size > 1:
            import torch.distributed as dist  # noqa: PLC0415

            if dist.is_available() and dist.is_initialized():
                box = [None] * dist.get_world_size()
                dist.all_gather_object(box, {"payload": payload, "stop": local_stop})
                payload = box[0]["payload"]
                stops = {r: b["stop"] for r, b in enumerate(box) if b["stop"]}
        return payload or {"apply": [], "lost": None}, stops

    def _on_engine_lost(self, step, control, why):
        if self.fail_mode == "fail_closed":
            control.should_training_stop = True
            self.stopped = self.stopped or (step, why)
            logger.error("tailguard: engine lost (%s); fail_closed: stopping training at step %d", why, step)
            self._log({"event": "engine_lost", "step": step, "fail_mode": self.fail_mode, "reason": why, "stop": True})
        elif not self._lost_warned:
            self._lost_warned = True
            logger.warning("tailguard: engine lost (%s); fail_open: training goes on unmonitored", why)
            self._log({"event": "engine_lost", "step": step, "fail_mode": self.fail_mode, "reason": why, "stop": False})
