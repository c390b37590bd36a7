"""Operator commands (MQTT or local): validated as a whole before anything moves.

A command is {"id", "action", "args", "issued_at"}. It is refused, with a reply that
names the problem and nothing changed, when it is too large (`too_large`) or nested too
deep (`too_deep`), not UTF-8 JSON (`bad_json`), carries a number that is not finite
(`not_finite`: NaN, Infinity, or one that overflows such as 1e999), is not of that shape,
an unknown action, has bad arguments, arrives retained, is older than its time-to-live (or
from the future), repeats an id already seen, or does not fit the run's state. A failure
of our own while handling one (a bug) is answered `internal` and costs that command only.
Every command and its reply is written to the event log.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field, ValidationError

from acquisition.config.station import ConfigError, StationConfig, pydantic_problems
from acquisition.config.tables import Strict
from acquisition.events import EventSink, HealthSource
from acquisition.json_guard import PayloadError, check_values, is_text, parse_json
from acquisition.run.scheduler import Scheduler
from acquisition.run.sequence import Plan, SequenceSpec, load_sequence, plan_sequence
from acquisition.run.state import RunRejectedError

log = structlog.get_logger(__name__)

RECENT_IDS = 10_000
MAX_PAYLOAD_BYTES = 65_536  # an inline sequence of a few hundred steps fits
MAX_DEPTH = 16  # {"args": {"sequence": {"steps": [{...}]}}} is 5 deep


CommandError = PayloadError  # a refused command: the reply's error code and message


class Args(Strict):
    """A command's arguments: unknown keys refused, every number finite."""


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


class Envelope(Strict):
    """A command as sent (strict: pydantic would otherwise read the strings "NaN" and
    "inf" as floats)."""

    id: str = Field(min_length=1, max_length=64)
    action: str = Field(min_length=1, max_length=32)
    args: dict[str, Any] = Field(default_factory=dict)
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
                 health: HealthSource, ttl_s: float, max_skew_s: float) -> None:
        self.config = config
        self.scheduler = scheduler
        self.emit = emit
        self.health = health
        self.ttl_s = ttl_s
        self.max_skew_s = max_skew_s
        self._seen: OrderedDict[str, None] = OrderedDict()

    def remember(self, ids: list[str]) -> None:
        """Ids already handled (e.g. before a restart): repeating them is refused."""
        for command_id in ids:
            self._seen[command_id] = None

    async def handle(self, payload: bytes | str, retained: bool = False, source: str = "mqtt",
                     refusal: CommandError | None = None) -> dict[str, Any]:
        """Validate and run one command; always return the reply (raises only if the event
        log cannot be written). `refusal` is a problem the transport found (e.g. an MQTT 5
        response topic one cannot answer on): the command is refused with it."""
        command_id = None
        try:
            raw = parse_json(payload, MAX_PAYLOAD_BYTES, MAX_DEPTH, "a command")
            command_id = _id_of(raw)
            check_values(raw, "", "a command")
            if refusal is not None:
                raise refusal
            envelope, args = self._validate(raw, retained)
            self._seen[envelope.id] = None
            while len(self._seen) > RECENT_IDS:
                self._seen.popitem(last=False)
            result = await self._execute(envelope.action, args)
            reply: dict[str, Any] = {"id": command_id, "ok": True, "result": result}
        except CommandError as error:
            reply = _error_reply(command_id, error)
        except Exception as error:  # a bug costs this command, not the daemon
            log.exception("command failed", command_id=command_id)
            reply = internal_error_reply(command_id, error)
            self._stop_gas(f"internal error handling command {command_id}: {error}")
        await self.record(payload, retained, source, reply)
        return reply

    def _stop_gas(self, reason: str) -> None:
        """After a bug in command handling nobody knows what the command did (an estop
        half done?): a run in progress is aborted, which makes what it touched safe."""
        with contextlib.suppress(RunRejectedError):
            if self.scheduler.running:
                self.scheduler.abort(reason[:500])

    async def record(self, payload: bytes | str, retained: bool, source: str,
                     reply: dict[str, Any]) -> None:
        """Write a command and its reply to the event log."""
        await self.emit("command", {"source": source, "payload": _printable(payload),
                                    "retained": retained, "reply": reply},
                        self.scheduler.status.run_id)

    def _validate(self, raw: Any, retained: bool) -> tuple[Envelope, Args]:
        if retained:
            raise CommandError("retained", "retained messages are never executed: publish "
                                           "commands with retain = false")
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
        # Written so that a comparison with NaN (always false) refuses rather than passes.
        if not age <= self.ttl_s:
            raise CommandError("expired", f"issued {age:.1f} s ago, older than the "
                                          f"{self.ttl_s:g} s time-to-live")
        if not age >= -self.max_skew_s:
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
                    return {"run_id": run_id, "steps": scheduler.status.steps}
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
                    await self.emit("note", {"text": args.text}, scheduler.status.run_id)
                case "status", _:
                    return scheduler.snapshot() | {"health": await self.health()}
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


def _error_reply(command_id: str | None, error: CommandError) -> dict[str, Any]:
    return {"id": command_id, "ok": False,
            "error": {"code": error.code, "message": error.message}}


def internal_error_reply(command_id: str | None, error: Exception) -> dict[str, Any]:
    """The reply to a command whose handling failed in our code: the exception's type and
    message, escaped to valid UTF-8 (the event log stores text only)."""
    text = f"{type(error).__name__}: {error}"[:1000]
    return _error_reply(command_id, CommandError(
        "internal", text.encode("utf-8", "backslashreplace").decode("utf-8")))


def _id_of(raw: Any) -> str | None:
    """The command's id if one can be read at all, so that even a refusal is matched."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 and is_text(value) else None


def _printable(payload: bytes | str) -> str:
    """At most 4000 characters of the payload for the event log, any bytes made text."""
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return data[:16_000].decode("utf-8", "replace")[:4000]
