"""The default alert rules (DESIGN.md: Alerts, incidents, reports), as the field commonly starts:
error rate above 5 % with more than 10 requests in the window, and p99 latency above 5 s, each
for every service over the last 5 minutes. Edit or disable them on /incidents/rules/."""

from django.db import migrations

DEFAULT_RULES = [
    {
        "name": "Error rate above 5 %",
        "metric": "error_rate",
        "threshold": 5.0,
        "min_requests": 10,
        "window_minutes": 5,
    },
    {
        "name": "p99 latency above 5 s",
        "metric": "p99_ms",
        "threshold": 5000.0,
        "min_requests": 0,
        "window_minutes": 5,
    },
]


def install(apps, schema_editor):
    AlertRule = apps.get_model("incidents", "AlertRule")
    for rule in DEFAULT_RULES:
        AlertRule.objects.get_or_create(name=rule["name"], defaults=rule)


def remove(apps, schema_editor):
    AlertRule = apps.get_model("incidents", "AlertRule")
    AlertRule.objects.filter(name__in=[rule["name"] for rule in DEFAULT_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("incidents", "0001_initial")]

    operations = [migrations.RunPython(install, remove)]
