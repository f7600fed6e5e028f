"""Applying one engine directive on the trainer (`apply`: warn, tighten, rollback, stop, curriculum), then acking
it to the engine and logging it to `<output_dir>/tailguard-directives.rank<R>.jsonl`. A mixin of `DirectiveApplier`
(directives.py, which decides what is due at a step boundary and broadcasts it to every rank).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from .checkpoints import CheckpointKeeper, RollbackRefused, read_state, rollback_in_process, rollback_refusal
from .knobs import Refusal, set_knob, tighten_targets

logger = logging.getLogger("tailguard.directives")

ACTIONS = ("noop", "warn", "tighten", "rollback", "stop", "curriculum")
ALPHA_CEILING_ENV = "TAILGUARD_ALPHA_CEILING"
ALPHA_CEILING_FILE = "tailguard-alpha-ceiling.json"


class Actions:
    # Set by DirectiveApplier.__init__.
    trainer: Any
    client: Any
    rank: int
    world_size: int
    keeper: CheckpointKeeper
    log_path: str
    alpha_ceiling: float | None
    applied_ids: list[str]
    rollbacks: int
    _rolling_back: bool

    def apply(self, d: dict, step: int, control) -> dict:
        """Apply one directive now; ack and log it. Never raises."""
        action = d.get("action")
        params = d.get("params") if isinstance(d.get("params"), dict) else {}
        changes, refused = [], []
        try:
            if action == "warn":
                logger.warning("tailguard: engine warns at step %d: %s", step, d.get("reason"))
            elif action == "tighten":
                targets = tighten_targets(params)
                if not targets:
                    refused.append("E_EMPTY_TIGHTEN: no knob targets in params")
                for knob, value in targets.items():
                    try:
                        old, new = set_knob(self.trainer, knob, value)
                        changes.append({"knob": knob, "old": old, "new": new})
                    except Refusal as e:
                        refused.append(str(e))
            elif action == "rollback":
                changes = self._rollback(params)
            elif action == "stop":
                control.should_training_stop = True
                hint = params.get("resume_from_checkpoint")
                logger.error(
                    "tailguard: engine says stop at step %d (%s)%s", step, params.get("cause") or d.get("reason"),
                    f"; resume with resume_from_checkpoint={hint!r}" if hint else "",
                )
                # ack changes are numbers on the wire (proto/README `ack`): the stop flag goes as 0 → 1
                changes.append({"knob": "should_training_stop", "old": 0, "new": 1})
            elif action == "curriculum":
                ceiling = params.get("alpha_ceiling")
                if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)) or not 0 <= ceiling <= 1:
                    raise Refusal("E_KNOB_VALUE", f"curriculum needs alpha_ceiling in [0, 1], got {ceiling!r}")
                old = self.alpha_ceiling
                self._set_alpha_ceiling(float(ceiling))
                changes.append({"knob": "alpha_ceiling", "old": old, "new": float(ceiling)})
            else:
                raise Refusal("E_UNKNOWN_ACTION", f"unknown action {action!r}")
        except (Refusal, RollbackRefused) as e:
            refused.append(str(e))
        except Exception as e:  # a failed load must not kill training silently either
            logger.exception("tailguard: applying %s failed", action)
            refused.append(f"E_APPLY_FAILED: {type(e).__name__}: {e}")
        applied = bool(changes) or (action == "warn" and not refused)
        reason = "; ".join(refused) or None
        if refused:
            logger.warning("tailguard: refused %s %s at step %d: %s", action, d.get("id"), step, reason)
        elif action != "warn":
            logger.info("tailguard: applied %s %s at step %d: %s", action, d.get("id"), step, changes)
        if applied:
            self.applied_ids.append(str(d.get("id")))
        late = isinstance(d.get("apply_at_step"), int) and d["apply_at_step"] < step
        if late:
            logger.warning("tailguard: %s %s applied late: due at step %d, applied at %d", action, d.get("id"),
                           d["apply_at_step"], step)
        rec = {
            "event": "directive",
            "late": late,
            "directive_id": d.get("id"),
            "action": action,
            "apply_at_step": d.get("apply_at_step"),
            "step": step,
            "applied": applied,
            "changes": changes,
            "refused": reason,
            "reason": d.get("reason"),
        }
        self._log(rec)
        self._ack(rec)
        return rec

    def _rollback(self, params: dict) -> list:
        ck = params.get("checkpoint") if isinstance(params.get("checkpoint"), dict) else params
        folder = self.keeper.resolve(step=ck.get("step"), path=ck.get("path"))
        refusal = rollback_refusal(self.trainer, folder)
        # Every rank must agree, or one rank would train on different weights.
        ok = self._all_agree(refusal is None)
        if refusal is not None:
            raise refusal
        if not ok:
            raise RollbackRefused("E_ROLLBACK_RANKS", "another rank cannot load this checkpoint; nobody rolls back")
        at = int(self.trainer.state.global_step)
        self._rolling_back = True
        try:
            rollback_in_process(self.trainer, folder)
        finally:
            self._rolling_back = False
        self.rollbacks += 1
        to_step = ck.get("step")
        if to_step is None:
            to_step = (read_state(folder) or {}).get("step")
        return [{"knob": "checkpoint", "old": at, "new": to_step, "path": folder}]

    def _all_agree(self, ok: bool) -> bool:
        if self.world_size > 1:
            import torch.distributed as dist  # noqa: PLC0415

            if dist.is_available() and dist.is_initialized():
                everyone = [None] * dist.get_world_size()
                dist.all_gather_object(everyone, bool(ok))
                return all(everyone)
        return ok

    def _set_alpha_ceiling(self, value: float) -> None:
        """Expose the α ceiling to the user's sampler: attribute, env var and a JSON file."""
        self.alpha_ceiling = value
        os.environ[ALPHA_CEILING_ENV] = repr(value)
        if self.rank == 0:
            path = os.path.join(self.trainer.args.output_dir, ALPHA_CEILING_FILE)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump({"alpha_ceiling": value, "step": int(self.trainer.state.global_step)}, f)
            os.replace(path + ".tmp", path)

    def _ack(self, rec: dict) -> None:
        if self.client is None or rec.get("directive_id") is None:
            return
        try:
            self.client.send_ack(
                directive_id=rec["directive_id"],
                step=rec["step"],
                applied=rec["applied"],
                changes=[{k: c[k] for k in ("knob", "old", "new")} for c in rec["changes"]],
                refused=rec["refused"],
            )
        except Exception as e:
            logger.warning("tailguard: ack failed: %s", e)

    def _log(self, rec: dict) -> None:
        rec = dict(rec, rank=self.rank, t=round(time.time(), 3))
        try:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec, default=str) + "\n")
        except OSError as e:
            logger.warning("tailguard: cannot write %s: %s", self.log_path, e)
