"""DUT reports arriving live on `crf/<station>/dut/<dut_id>/report`.

Each is validated as a whole: a bad one is answered on `dut/<dut_id>/report/reply` with a
code and a message naming the field, and kept in the event log, never half-stored. A good
one is committed to `dut_reports` with its raw payload and receive time, filed under the
run whose time span holds the report's time (a DUT reports late; the run may have ended,
or the next begun), answered, and published on that run's event stream. A retained
report is refused, and the same payload twice (a QoS 1 redelivery) is stored once. The
reply says only what the DUT sent: nothing a DUT can read reveals a blind run's truth.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from acquisition.dut.report import DutReport, ReportError, report_row, validate_report
from acquisition.events import EventSink
from acquisition.run.scheduler import Scheduler
from acquisition.store.store import DuplicateImportError, Store

log = structlog.get_logger(__name__)


def live_import_key(dut_id: str, payload: bytes) -> str:
    """A live report's key in the store: the same payload from the same DUT (a QoS 1
    redelivery) is stored once."""
    return "mqtt:" + hashlib.sha256(dut_id.encode() + b"\0" + payload).hexdigest()


def report_event(report: DutReport) -> dict[str, Any]:
    """The detail of the `dut.report` event a stored report is announced with."""
    return {"dut_id": report.dut_id, "t_ns": report.t_ns,
            "window_start_ns": report.window_start_ns, "window_end_ns": report.window_end_ns,
            "rate_kg_h": report.rate_kg_h, "lat": report.lat, "lon": report.lon,
            "detected": report.detected}


class ReportIntake:
    def __init__(self, store: Store, scheduler: Scheduler, emit: EventSink,
                 species: str) -> None:
        self.store = store
        self.scheduler = scheduler
        self.emit = emit
        self.species = species
        self.accepted = 0
        self.refused = 0
        self.last_refusal: dict[str, Any] | None = None
        self._taken = asyncio.Condition()  # notified after each report, stored or refused

    def health(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused,
                "last_refusal": self.last_refusal}

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; checked now and after every report taken."""
        async with self._taken:
            await self._taken.wait_for(condition)

    async def take(self, dut_id: str, payload: bytes | str, retained: bool = False
                   ) -> dict[str, Any]:
        """Validate, store and announce one report; the reply for the DUT."""
        try:
            return await self._take(dut_id, payload, retained)
        finally:
            async with self._taken:
                self._taken.notify_all()

    async def _take(self, dut_id: str, payload: bytes | str, retained: bool
                    ) -> dict[str, Any]:
        received_ns = time.time_ns()
        try:
            if retained:
                raise ReportError("retained", "a retained report would be taken again at "
                                              "every reconnect: publish with retain = false")
            report = validate_report(payload, dut_id, self.species)
        except ReportError as error:
            run_id = self.scheduler.status.run_id
            self.refused += 1
            self.last_refusal = {"dut_id": dut_id, "code": error.code,
                                 "message": error.message, "t_ns": received_ns}
            log.warning("DUT report refused", dut_id=dut_id, code=error.code,
                        message=error.message)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
            await self.emit("dut.report.refused", {"dut_id": dut_id, "code": error.code,
                                                   "message": error.message,
                                                   "payload": text[:4000]}, run_id)
            return {"ok": False, "error": {"code": error.code, "message": error.message}}
        run_id = await self.store.run_at(report.t_ns)  # None: a time of no run
        data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
        row = report_row(report, run_id, received_ns, "mqtt", payload) | {
            "import_key": live_import_key(dut_id, data)}
        try:
            await self.store.add_dut_report(row)
        except DuplicateImportError:  # the same report again: already stored, say so
            return {"ok": True, "t_ns": report.t_ns, "run_id": run_id, "duplicate": True}
        self.accepted += 1
        await self.emit("dut.report", report_event(report), run_id)
        return {"ok": True, "t_ns": report.t_ns, "run_id": run_id}
