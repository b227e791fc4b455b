from django.db import models


class Host(models.Model):
    """A machine running a probe worker, registered by its heartbeats."""

    name = models.CharField(max_length=255, unique=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=64, blank=True)
    kernel = models.CharField(max_length=128, blank=True)
    # Latest heartbeat as reported: {probe: {"desired", "actual", "error"}}.
    probes = models.JSONField(default=dict, blank=True)
    events_seen = models.BigIntegerField(default=0)
    events_dropped = models.BigIntegerField(default=0)
    events_per_s = models.FloatField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name
