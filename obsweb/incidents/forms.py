"""Forms of the incident pages. What a rule may be is checked by AlertRule.clean, so the page, the
API and the admin accept the same rules."""

from django import forms

from obsweb.fleet.models import Host
from obsweb.incidents.lifecycle import MAX_COMMENT_CHARS
from obsweb.incidents.models import AlertRule
from obsweb.telemetry.models import Service


class AlertRuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = [
            "name",
            "metric",
            "service",
            "host",
            "window_minutes",
            "threshold",
            "min_requests",
            "status_codes",
            "baseline",
            "enabled",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["service"].queryset = Service.objects.filter(external=False).order_by("name")
        self.fields["service"].empty_label = "every service"
        self.fields["host"].queryset = Host.objects.order_by("name")
        self.fields["host"].empty_label = "every host"
        self.fields["status_codes"].widget.attrs.update({"placeholder": "5xx", "size": 4})
        self.fields["window_minutes"].label = "Window (minutes)"
        self.fields["min_requests"].label = "More requests than"


class CommentForm(forms.Form):
    text = forms.CharField(
        max_length=MAX_COMMENT_CHARS,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "What you found or did"}),
        label="Comment",
    )
