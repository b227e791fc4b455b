"""Websocket consumers: one per live view, each joined to the group its broadcaster sends to."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model

from obsweb.dashboard.constants import HOSTS_GROUP, OVERVIEW_GROUP
from obsweb.fleet import control
from obsweb.fleet.models import Host
from probes import schema

# Close code for "log in first" (4000-4999 are free for applications); the page stops reconnecting.
CLOSE_UNAUTHENTICATED = 4401
ACTION_SET_PROBES = "set_probes"


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """A logged-in page joined to `group`; anyone else is closed with CLOSE_UNAUTHENTICATED."""

    group = ""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Accept first: a close before accept is a failed handshake, and the browser
            # would only ever see code 1006 and keep retrying.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)


class OverviewConsumer(LiveConsumer):
    """Pushes the services table, hosts strip and host warnings of the overview page, at most once
    per ingester tick, and every few seconds without new records (tasks.refresh_live_overview)."""

    group = OVERVIEW_GROUP

    async def overview_update(self, event):
        await self.send_json(
            {
                "type": "services",
                "services": event["services"],
                "hosts": event["hosts"],
                "warnings": event["warnings"],
                "first_run": event.get("first_run"),
                "latest_ts_ns": event["latest_ts_ns"],
                "sent_at_ns": event["sent_at_ns"],
            }
        )


class HostsConsumer(LiveConsumer):
    """Tells the hosts page that heartbeats arrived (the page then fetches its rows), and takes
    probe changes from staff: {"action": "set_probes", "host": name, "probes": {"http": false}}."""

    group = HOSTS_GROUP

    async def hosts_changed(self, event):
        await self.send_json({"type": "hosts", "sent_at_ns": event["sent_at_ns"]})

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or content.get("action") != ACTION_SET_PROBES:
            await self.send_json(
                {"type": "error", "detail": f'unknown action; send "action": "{ACTION_SET_PROBES}"'}
            )
            return
        await self.send_json(await database_sync_to_async(self._set_probes)(content))

    def _set_probes(self, content: dict) -> dict:
        # Read the user again: staff rights taken away after the page opened are gone now.
        user = get_user_model().objects.filter(pk=self.scope["user"].pk).first()
        if not control.may_change(user):
            return {"type": "error", "detail": "only staff may change probes"}
        name = content.get("host")
        host = Host.objects.filter(name=name).first() if isinstance(name, str) else None
        if host is None:
            return {"type": "error", "detail": f"no host named {str(name)[:255]!r}"}
        try:
            control.set_probes(
                host, content.get("probes"), user, reason=str(content.get("reason") or "")[:500]
            )
        except ValueError as exc:
            return {"type": "error", "detail": str(exc)}
        except control.WorkerNotTold as exc:
            return {"type": "error", "detail": str(exc), "saved": True, "host": host.name}
        return {"type": "applied", "host": host.name, "probes": {p: host.wants(p) for p in schema.PROBES}}
