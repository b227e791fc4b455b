"""The incidents websocket: the banner every page shows, and report progress on incident pages.

Nothing captured from traffic is built into HTML from these messages: the banner sets text, and
the incident page fetches its server-rendered report rows when told of progress.
"""

from obsweb.dashboard.consumers import LiveConsumer
from obsweb.incidents import constants as c


class IncidentsConsumer(LiveConsumer):
    group = c.INCIDENTS_GROUP

    async def incidents_changed(self, event):
        await self.send_json({"type": "incidents", "open": event["open"], "subjects": event["subjects"]})

    async def report_progress(self, event):
        await self.send_json(
            {
                "type": "report",
                "report": event["report"],
                "incident": event["incident"],
                "status": event["status"],
                "progress": event["progress"],
            }
        )
