"""Operator commands (MQTT or local): validated as a whole before anything moves.

A command is {"id", "action", "args", "issued_at"}. It is refused, with a reply that
names the problem and nothing changed, when it is not JSON, not of that shape, an
unknown action, has bad arguments, arrives retained, is older than its time-to-live (or
from the future), repeats an id already seen, or does not fit the run's state. Every
command and its reply is written to the event log.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acquisition.config import ConfigError, StationConfig, pydantic_problems
from acquisition.events import EventSink
from acquisition.scheduler import RunRejectedError, Scheduler
from acquisition.sequence import Plan, SequenceSpec, load_sequence, plan_sequence

RECENT_IDS = 10_000


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(Args):
    pass


class ReasonArgs(Args):
    reason: str = Field("operator", max_length=500)


class StartArgs(Args):
    sequence: str | dict[str, Any] = Field(description="a sequence name, or one inline")
    operator: str | None = Field(None, max_length=200)
    dut: str | None = Field(None, max_length=2000)
    seed: int | None = None


class ReleaseArgs(Args):
    point: str
    rate: float = Field(gt=0)
    unit: str = "kg/h"
    duration_s: float = Field(gt=0)
    operator: str | None = Field(None, max_length=200)


class AnnotateArgs(Args):
    text: str = Field(min_length=1, max_length=5000)


ACTIONS: dict[str, type[Args]] = {
    "start": StartArgs, "pause": ReasonArgs, "resume": NoArgs, "skip": ReasonArgs,
    "abort": ReasonArgs, "estop": ReasonArgs, "release": ReleaseArgs, "status": NoArgs,
    "annotate": AnnotateArgs,
}


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    action: str = Field(min_length=1, max_length=32)
    args: dict[str, Any] = {}
    issued_at: float | datetime = Field(description="UNIX seconds or ISO 8601 with zone")

    def issued_epoch(self) -> float:
        if isinstance(self.issued_at, datetime):
            if self.issued_at.tzinfo is None:
                raise CommandError("bad_command", "issued_at: an ISO time needs a time zone")
            return self.issued_at.timestamp()
        return float(self.issued_at)


def _problems_text(error: ValidationError, prefix: str) -> str:
    return "; ".join(f"{key}: {message}" for key, message in pydantic_problems(error, prefix))


class CommandProcessor:
    def __init__(self, config: StationConfig, scheduler: Scheduler, emit: EventSink,
                 ttl_s: float, max_skew_s: float) -> None:
        self.config = config
        self.scheduler = scheduler
        self.emit = emit
        self.ttl_s = ttl_s
        self.max_skew_s = max_skew_s
        self._seen: OrderedDict[str, None] = OrderedDict()

    def remember(self, ids: list[str]) -> None:
        """Ids already handled (e.g. before a restart): repeating them is refused."""
        for command_id in ids:
            self._seen[command_id] = None

    async def handle(self, payload: bytes | str, retained: bool = False,
                     source: str = "mqtt") -> dict[str, Any]:
        """Validate and run one command; always return the reply, never raise."""
        command_id = None
        try:
            envelope, args = self._validate(payload, retained)
            command_id = envelope.id
            self._seen[command_id] = None
            while len(self._seen) > RECENT_IDS:
                self._seen.popitem(last=False)
            result = await self._execute(envelope.action, args)
            reply: dict[str, Any] = {"id": command_id, "ok": True, "result": result}
        except CommandError as error:
            command_id = command_id or _peek_id(payload)
            reply = {"id": command_id, "ok": False,
                     "error": {"code": error.code, "message": error.message}}
        await self.emit("command", {"source": source, "payload": _printable(payload),
                                    "retained": retained, "reply": reply},
                        self.scheduler.run_id)
        return reply

    def _validate(self, payload: bytes | str, retained: bool) -> tuple[Envelope, Args]:
        if retained:
            raise CommandError("retained", "retained messages are never executed: publish "
                                           "commands with retain = false")
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as error:
            raise CommandError("bad_json", f"payload is not JSON: {error}") from None
        if not isinstance(raw, dict):
            raise CommandError("bad_command", "a command is a JSON object "
                                              '{"id", "action", "args", "issued_at"}')
        try:
            envelope = Envelope.model_validate(raw)
        except ValidationError as error:
            raise CommandError("bad_command", _problems_text(error, "")) from None
        if envelope.action not in ACTIONS:
            raise CommandError("unknown_action", f"unknown action '{envelope.action}' "
                                                 f"(known: {', '.join(ACTIONS)})")
        try:
            args = ACTIONS[envelope.action].model_validate(envelope.args)
        except ValidationError as error:
            raise CommandError("bad_args", _problems_text(error, "args")) from None
        age = time.time() - envelope.issued_epoch()
        if age > self.ttl_s:
            raise CommandError("expired", f"issued {age:.1f} s ago, older than the "
                                          f"{self.ttl_s:g} s time-to-live")
        if age < -self.max_skew_s:
            raise CommandError("expired", f"issued {-age:.1f} s in the future: check the "
                                          "sender's clock")
        if envelope.id in self._seen:
            raise CommandError("duplicate", f"command id '{envelope.id}' was already handled")
        return envelope, args

    async def _execute(self, action: str, args: Args) -> dict[str, Any]:
        scheduler = self.scheduler
        try:
            match action, args:
                case "start", StartArgs():
                    run_id = await scheduler.start(self._plan(args), args.operator, args.dut)
                    return {"run_id": run_id, "steps": len(scheduler.plan.steps)}  # type: ignore[union-attr]
                case "release", ReleaseArgs():
                    run_id = await scheduler.release(args.point, args.rate, args.unit,
                                                     args.duration_s, args.operator)
                    return {"run_id": run_id}
                case "pause", ReasonArgs():
                    scheduler.pause(args.reason)
                case "resume", _:
                    scheduler.resume()
                case "skip", ReasonArgs():
                    scheduler.skip(args.reason)
                case "abort", ReasonArgs():
                    scheduler.abort(args.reason)
                case "estop", ReasonArgs():
                    await scheduler.estop(args.reason)
                case "annotate", AnnotateArgs():
                    await self.emit("note", {"text": args.text}, scheduler.run_id)
        except RunRejectedError as error:
            raise CommandError("not_allowed", str(error)) from None
        except ConfigError as error:
            raise CommandError("rejected", "; ".join(
                f"{key}: {message}" if key else message
                for key, message in error.problems)) from None
        return scheduler.snapshot()

    def _plan(self, args: StartArgs) -> Plan:
        if isinstance(args.sequence, str):
            if "/" in args.sequence or args.sequence.endswith(".toml"):
                raise CommandError("bad_args", "args.sequence: a sequence name, not a path")
            return load_sequence(args.sequence, self.config, seed=args.seed)
        try:
            spec = SequenceSpec.model_validate(args.sequence)
        except ValidationError as error:
            raise CommandError("bad_args", _problems_text(error, "args.sequence")) from None
        return plan_sequence(spec, self.config, Path("inline sequence"), seed=args.seed)


def _peek_id(payload: bytes | str) -> str | None:
    """The command's id if one can be read at all, so that even a refusal is matched."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def _printable(payload: bytes | str) -> str:
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return text[:4000]
