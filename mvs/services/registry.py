"""ServiceRegistry: who runs where, from registrations and heartbeats.

MVS services announce themselves (``service.registered.v1``) and send a heartbeat on
``mvs.hb.<service>`` every few seconds; the registry folds both into its table, so a lookup is
a dictionary read. On start it pings every NATS micro service (``$SRV.PING``) so the table
is full at once instead of after one heartbeat interval. Entries not heard from for three
heartbeat intervals are reported as ``stale``.

Agents outside MVS (legacy bridges, tools) register with ``register`` and keep themselves
fresh with ``heartbeat``. The legacy-style answers ``get_agent_endpoint`` and ``list_agents``
keep the old ``{"status": "success", ...}`` shape; a legacy agent name that the config maps
into one of the 13 services (``legacy_agents``) resolves to that service.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import msgspec

from mvs.rpc import HEARTBEAT_PREFIX, Empty, Heartbeat
from mvs.service import Service, endpoint
from streams.events.system import ServiceRegistered
from streams.subjects import service_subject

__all__ = [
    "AgentEndpoint",
    "AgentList",
    "LookupRequest",
    "RegisterReply",
    "RegisterRequest",
    "ServiceEntry",
    "ServiceList",
    "ServiceRegistry",
]

_STALE_BEATS = 3.0


class ServiceEntry(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    host: str
    instance_id: str = ""
    endpoint: str = ""
    port: int | None = None
    health_port: int | None = None
    protocol: str = "nats-micro"
    pid: int | None = None
    process: str = ""
    status: str = "unknown"
    registered_at: float = 0.0
    last_seen_at: float = 0.0


class RegisterRequest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    host: str = "mainpc"
    endpoint: str = ""
    port: int | None = None
    health_port: int | None = None
    protocol: str = "zmq"
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class RegisterReply(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    name: str
    instance_id: str


class LookupRequest(msgspec.Struct, frozen=True, kw_only=True):
    service: str


class HeartbeatRequest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    status: str = "healthy"


class ServiceList(msgspec.Struct, frozen=True, kw_only=True):
    services: list[ServiceEntry]


class AgentRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Legacy request: ``{"action": "get_agent_endpoint", "agent_name": ...}``."""

    agent_name: str
    action: str = "get_agent_endpoint"


class AgentEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    agent_name: str
    service: str
    host: str
    endpoint: str
    port: int | None = None
    health_check_port: int | None = None
    is_healthy: bool = False


class AgentListRequest(msgspec.Struct, frozen=True, kw_only=True):
    action: str = "list_agents"


class AgentList(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    agents: list[str]
    legacy_agents: dict[str, str] = msgspec.field(default_factory=dict)


_beat = msgspec.msgpack.Decoder(Heartbeat)
_registered = msgspec.msgpack.Decoder(ServiceRegistered)


class ServiceRegistry(Service):
    """Registration, heartbeats and lookup of every service and agent."""

    name = "ServiceRegistry"

    async def on_start(self) -> None:
        self.entries: dict[str, ServiceEntry] = {}
        cfg = self.ctx.config
        self.legacy_map: dict[str, str] = {}
        if cfg is not None:
            for svc, spec in cfg.services.items():
                for agent in spec.legacy_agents:
                    self.legacy_map[agent.lower()] = svc
        nc = self.ctx.nc
        self._subs = [
            await nc.subscribe(f"{HEARTBEAT_PREFIX}.>", cb=self._on_heartbeat),
            await nc.subscribe("mvs.evt.service.*", cb=self._on_event),
        ]
        self.spawn(self._discover(), name="registry-discover")

    async def on_stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _discover(self) -> None:
        """Ask every running micro service to identify itself (scatter-gather on PING)."""
        inbox = self.ctx.nc.new_inbox()
        sub = await self.ctx.nc.subscribe(inbox)
        await self.ctx.nc.publish("$SRV.PING", b"", reply=inbox)
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:
                break
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ping = json.loads(msg.data)
                meta = ping.get("metadata") or {}
                self._upsert(
                    ping["name"],
                    host=meta.get("host", ""),
                    instance_id=ping.get("id", ""),
                    pid=int(meta["pid"]) if meta.get("pid") else None,
                    process=meta.get("process", ""),
                    status="unknown",
                )
        await sub.unsubscribe()

    def _upsert(self, name: str, **fields: Any) -> ServiceEntry:
        now = time.time()
        old = self.entries.get(name)
        if old is None:
            base = ServiceEntry(
                service=name,
                host=fields.get("host") or "",
                endpoint=service_subject(name, "*"),
                registered_at=now,
            )
        else:
            base = old
        changes = {k: v for k, v in fields.items() if v is not None and v != ""}
        entry = msgspec.structs.replace(base, last_seen_at=now, **changes)
        self.entries[name] = entry
        return entry

    async def _on_heartbeat(self, msg: Any) -> None:
        try:
            beat = _beat.decode(msg.data)
        except msgspec.DecodeError:
            return  # not ours; a registry never dies of one bad message
        self._upsert(beat.service, host=beat.host, instance_id=beat.instance_id,
                     status=beat.status, pid=beat.pid, process=beat.process)

    async def _on_event(self, msg: Any) -> None:
        # Only registrations matter here; other service events share the subject space.
        if b"service.registered.v1" not in msg.data[:64]:
            return
        try:
            ev = _registered.decode(msg.data)
        except msgspec.DecodeError:
            return
        self._upsert(ev.service, host=ev.host, instance_id=ev.instance_id, endpoint=ev.endpoint,
                     port=ev.port, health_port=ev.health_port, protocol=ev.protocol, pid=ev.pid,
                     registered_at=ev.occurred_at)

    def _view(self, entry: ServiceEntry) -> ServiceEntry:
        interval = self.heartbeat_s
        if time.time() - entry.last_seen_at > _STALE_BEATS * interval:
            return msgspec.structs.replace(entry, status="stale")
        return entry

    def _resolve(self, name: str) -> tuple[str, ServiceEntry]:
        entry = self.entries.get(name)
        if entry is None:
            # names are matched case-insensitively, like the legacy registry's keys
            for key, value in self.entries.items():
                if key.lower() == name.lower():
                    return key, value
            target = self.legacy_map.get(name.lower())
            if target is not None and target in self.entries:
                return target, self.entries[target]
            known = ", ".join(sorted(self.entries)) or "none"
            raise LookupError(f"no service or agent named {name!r} is registered (known: {known})")
        return name, entry

    @endpoint("register", request=RegisterRequest, reply=RegisterReply)
    async def register(self, req: RegisterRequest) -> RegisterReply:
        if not req.name.strip():
            raise ValueError("register needs a non-empty name")
        entry = self._upsert(req.name, host=req.host, endpoint=req.endpoint, port=req.port,
                             health_port=req.health_port, protocol=req.protocol,
                             status="healthy", instance_id=req.metadata.get("instance_id"))
        await self.ctx.events.publish(
            ServiceRegistered(service=req.name, host=req.host, instance_id=entry.instance_id,
                              endpoint=req.endpoint, port=req.port, health_port=req.health_port,
                              protocol=req.protocol, source=self.name)
        )
        return RegisterReply(status="success", name=req.name, instance_id=entry.instance_id)

    @endpoint("heartbeat", request=HeartbeatRequest, reply=Empty, record=False)
    async def heartbeat(self, req: HeartbeatRequest) -> Empty:
        self._resolve(req.name)
        self._upsert(req.name, status=req.status)
        return Empty()

    @endpoint("lookup", request=LookupRequest, reply=ServiceEntry)
    async def lookup(self, req: LookupRequest) -> ServiceEntry:
        return self._view(self._resolve(req.service)[1])

    @endpoint("list", request=Empty, reply=ServiceList)
    async def list_services(self, req: Empty) -> ServiceList:
        return ServiceList(services=[self._view(e) for _, e in sorted(self.entries.items())])

    @endpoint("get_agent_endpoint", request=AgentRequest, reply=AgentEndpoint)
    async def get_agent_endpoint(self, req: AgentRequest) -> AgentEndpoint:
        service, entry = self._resolve(req.agent_name)
        entry = self._view(entry)
        return AgentEndpoint(
            status="success",
            agent_name=req.agent_name,
            service=service,
            host=entry.host,
            endpoint=entry.endpoint,
            port=entry.port,
            health_check_port=entry.health_port,
            is_healthy=entry.status == "healthy",
        )

    @endpoint("list_agents", request=AgentListRequest, reply=AgentList)
    async def list_agents(self, req: AgentListRequest) -> AgentList:
        return AgentList(status="success", agents=sorted(self.entries),
                         legacy_agents=dict(sorted(self.legacy_map.items())))

    async def check_health(self) -> dict[str, str]:
        return {"connection": "ok" if self.ctx.nc.is_connected else "disconnected"}
