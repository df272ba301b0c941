"""ObservabilityHub: one Prometheus ``/metrics`` for the whole system, health, alerts.

``/metrics`` (HTTP on ``observability.metrics_host:metrics_port``; port 0 picks a free one,
reported by the ``info`` endpoint): on each scrape the hub asks every process group for its
exposition over NATS (``mvs.metrics.<process>``, answered by :mod:`mvs.runner`), merges the
families, and labels every sample with ``process`` so that one series per process survives
the merge. ``mvs_process_up{process}`` says which processes answered.
``/health`` returns the aggregated health as JSON.

Alerts are events: ``alert.raised.v1`` when a service misses three heartbeats, a process
crashes, a breaker opens, or host CPU/memory cross the configured thresholds; ``alert.cleared.v1``
when the condition ends. Alert ids are deterministic (``<kind>:<subject>``), so raising an
alert twice is one alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mvs.rpc import HEARTBEAT_PREFIX, Empty, Heartbeat
from mvs.service import Service, endpoint
from streams.catalog import decode_event
from streams.events.system import (
    AlertCleared,
    AlertRaised,
    BreakerStateChanged,
    HostSampled,
    ServiceCrashed,
)

__all__ = ["AggregatedHealth", "HubInfo", "ObservabilityHub", "merge_expositions"]

_METRICS_PREFIX = "mvs.metrics"


class HubInfo(msgspec.Struct, frozen=True, kw_only=True):
    metrics_url: str
    processes: list[str]


class AggregatedHealth(msgspec.Struct, frozen=True, kw_only=True):
    healthy: bool
    services: dict[str, str]
    active_alerts: dict[str, str]


class _Merged:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge_expositions(texts: dict[str, str]) -> bytes:
    """Merge Prometheus texts of several processes into one, adding a ``process`` label."""
    merged: dict[str, Metric] = {}
    for process, text in texts.items():
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = target
            for s in family.samples:
                target.samples.append(s._replace(labels={**s.labels, "process": process}))
    up = Metric("mvs_process_up", "1 if the process answered the last scrape", "gauge")
    for process, text in texts.items():
        up.add_sample("mvs_process_up", {"process": process}, 1.0 if text else 0.0)
    merged[up.name] = up
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(merged.values())))
    return generate_latest(registry)


class ObservabilityHub(Service):
    """One /metrics endpoint for the whole system, aggregated health, alerts as events."""

    name = "ObservabilityHub"

    async def on_start(self) -> None:
        cfg = self.ctx.config
        obs = cfg.observability if cfg else None
        self.scrape_timeout = obs.scrape_timeout_s if obs else 1.0
        self.cpu_alert = obs.alert_cpu_percent if obs else 90.0
        self.mem_alert = obs.alert_memory_percent if obs else 90.0
        self.processes = sorted(
            {s.process for s in cfg.services.values() if s.enabled} if cfg else {self.ctx.process}
        )
        self.last_beat: dict[str, Heartbeat] = {}
        self.alerts: dict[str, AlertRaised] = {}
        self._server = await asyncio.start_server(
            self._http, obs.metrics_host if obs else "127.0.0.1", obs.metrics_port if obs else 0
        )
        sock = self._server.sockets[0].getsockname()
        self.metrics_url = f"http://{sock[0]}:{sock[1]}/metrics"
        nc = self.ctx.nc
        self._subs: list[Any] = [
            await nc.subscribe(f"{HEARTBEAT_PREFIX}.>", cb=self._on_beat),
            # live events only: alerts are about now, not about the history
            await nc.subscribe("mvs.evt.breaker.>", cb=self._on_event),
            await nc.subscribe("mvs.evt.twin.>", cb=self._on_event),
            await nc.subscribe("mvs.evt.service.*", cb=self._on_event),
        ]
        self.spawn(self._watch_heartbeats(), name="hub-heartbeats")
        self.log.info("metrics endpoint", extra={"url": self.metrics_url})

    async def on_stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    # ---- metrics ----------------------------------------------------------------------------
    async def gather(self) -> bytes:
        async def one(process: str) -> tuple[str, str]:
            try:
                msg = await self.ctx.nc.request(
                    f"{_METRICS_PREFIX}.{process}", b"", timeout=self.scrape_timeout
                )
                return process, msg.data.decode()
            except Exception:  # a process that does not answer shows as mvs_process_up 0
                return process, ""

        texts = dict(await asyncio.gather(*(one(p) for p in self.processes)))
        return merge_expositions(texts)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = head.split(b" ", 2)[1].decode(errors="replace") if b" " in head else "/"
            if path.startswith("/metrics"):
                body, ctype, code = await self.gather(), "text/plain; version=0.0.4", "200 OK"
            elif path.startswith("/health"):
                body = msgspec.json.encode(await self._aggregate())
                ctype, code = "application/json", "200 OK"
            else:
                body, ctype, code = b"not found: try /metrics or /health\n", "text/plain", "404"
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()

    # ---- health and alerts ------------------------------------------------------------------
    async def _on_beat(self, msg: Any) -> None:
        try:
            beat = msgspec.msgpack.decode(msg.data, type=Heartbeat)
        except msgspec.DecodeError:
            return
        self.last_beat[beat.service] = beat
        self._clear(f"heartbeat:{beat.service}", "heartbeats resumed")
        if beat.status == "healthy":
            self._clear(f"crash:{beat.service}", "service is healthy again")

    async def _on_event(self, msg: Any) -> None:
        if msg.subject.startswith("mvs.evt.service.") and b"service.crashed" not in msg.data[:64]:
            return  # call and health events share the subject space; only crashes matter
        try:
            ev = decode_event(msg.data)
        except Exception:
            return
        if isinstance(ev, ServiceCrashed):
            self._raise(f"crash:{ev.service}", "critical", f"{ev.service} crashed: {ev.reason}",
                        ev.service)
        elif isinstance(ev, BreakerStateChanged):
            key = f"breaker:{ev.service}:{ev.dependency}"
            if ev.to_state == "open":
                self._raise(key, "warning",
                            f"{ev.service} -> {ev.dependency} circuit open ({ev.reason})",
                            ev.service, {"failures": float(ev.failures)})
            elif ev.to_state == "closed":
                self._clear(key, "circuit closed")
        elif isinstance(ev, HostSampled) and ev.memory_total_mb:
            mem_pct = 100.0 * ev.memory_used_mb / ev.memory_total_mb
            for kind, value, limit in (("cpu", ev.cpu_percent, self.cpu_alert),
                                       ("memory", mem_pct, self.mem_alert)):
                key = f"host_{kind}:{ev.host}"
                if value > limit:
                    message = f"{ev.host} {kind} at {value:.0f}% (> {limit:.0f}%)"
                    self._raise(key, "warning", message, "", {f"{kind}_percent": value})
                else:
                    self._clear(key, f"{kind} back under {limit:.0f}%")

    def _raise(self, alert_id: str, severity: Any, message: str, service: str,
               metrics: dict[str, float] | None = None) -> None:
        if alert_id in self.alerts:
            return
        alert = AlertRaised(alert_id=alert_id, severity=severity, message=message,
                            service=service, metrics=metrics or {}, source=self.name)
        self.alerts[alert_id] = alert
        self.ctx.events.emit(alert)
        self.log.warning("alert raised", extra={"alert_id": alert_id, "alert": message})

    def _clear(self, alert_id: str, message: str) -> None:
        if self.alerts.pop(alert_id, None) is not None:
            self.ctx.events.emit(AlertCleared(alert_id=alert_id, message=message,
                                              source=self.name))

    async def _watch_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            now = time.time()
            for name, beat in list(self.last_beat.items()):
                if now - beat.at > 3 * self.heartbeat_s:
                    message = f"{name} missed 3 heartbeats (last {now - beat.at:.0f} s ago)"
                    self._raise(f"heartbeat:{name}", "warning", message, name)

    async def _aggregate(self) -> AggregatedHealth:
        now = time.time()
        services = {
            n: (b.status if now - b.at <= 3 * self.heartbeat_s else "stale")
            for n, b in sorted(self.last_beat.items())
        }
        return AggregatedHealth(
            healthy=bool(services) and all(s == "healthy" for s in services.values()),
            services=services,
            active_alerts={k: a.message for k, a in sorted(self.alerts.items())},
        )

    @endpoint("health_summary", request=Empty, reply=AggregatedHealth, record=False)
    async def health_summary(self, req: Empty) -> AggregatedHealth:
        return await self._aggregate()

    @endpoint("info", request=Empty, reply=HubInfo, record=False)
    async def info(self, req: Empty) -> HubInfo:
        return HubInfo(metrics_url=self.metrics_url, processes=self.processes)
