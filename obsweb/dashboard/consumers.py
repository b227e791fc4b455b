"""Websocket consumers: one per live view, each joined to the group its broadcaster sends to."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from obsweb.dashboard.constants import OVERVIEW_GROUP

# Close code for "log in first" (4000-4999 are free for applications); the page stops reconnecting.
CLOSE_UNAUTHENTICATED = 4401


class OverviewConsumer(AsyncJsonWebsocketConsumer):
    """Pushes the services table, hosts strip and host warnings of the overview page, at most once
    per ingester tick, and every few seconds without new records (tasks.refresh_live_overview)."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Accept first: a close before accept is a failed handshake, and the browser
            # would only ever see code 1006 and keep retrying.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(OVERVIEW_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(OVERVIEW_GROUP, self.channel_name)

    async def overview_update(self, event):
        await self.send_json(
            {
                "type": "services",
                "services": event["services"],
                "hosts": event["hosts"],
                "warnings": event["warnings"],
                "latest_ts_ns": event["latest_ts_ns"],
                "sent_at_ns": event["sent_at_ns"],
            }
        )
