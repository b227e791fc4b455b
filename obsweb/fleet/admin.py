"""The fleet in Django admin. Hosts register themselves from heartbeats, so the admin only changes
what they should do, through obsweb.fleet.control: the worker is told and the change audited, as
from the hosts page and the API. The audit log is read-only."""

from django import forms
from django.contrib import admin, messages

from obsweb.fleet import control
from obsweb.fleet.models import AuditEntry, Host, RedactionPolicy
from probes import schema

PROBE_FIELD = "probe_{}"


class HostForm(forms.ModelForm):
    """The CPU budget and one checkbox per probe (desired on); the JSON itself is not edited."""

    class Meta:
        model = Host
        fields = ["cpu_budget_percent"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for probe in schema.PROBES:
            self.initial.setdefault(PROBE_FIELD.format(probe), self.instance.wants(probe))

    def clean_cpu_budget_percent(self):
        try:
            return control.check_cpu_budget(self.cleaned_data["cpu_budget_percent"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def probe_changes(self) -> dict[str, bool]:
        return {probe: self.cleaned_data[PROBE_FIELD.format(probe)] for probe in schema.PROBES}


# Declared on the class, so the admin's form factory knows them as form fields.
for _probe in schema.PROBES:
    HostForm.base_fields[PROBE_FIELD.format(_probe)] = HostForm.declared_fields[
        PROBE_FIELD.format(_probe)
    ] = forms.BooleanField(required=False, label=f"{_probe} probe on")


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    form = HostForm
    list_display = [
        "name",
        "status_now",
        "last_seen",
        "agent_version",
        "kernel",
        "cpu_percent",
        "cpu_budget_percent",
    ]
    search_fields = ["name"]
    readonly_fields = [
        "name", "first_seen", "last_seen", "stopped", "agent_version", "kernel", "probes",
        "events_seen", "events_dropped", "events_per_s", "cpu_percent",
    ]  # fmt: skip

    def get_fields(self, request, obj=None):
        return [*self.readonly_fields, "cpu_budget_percent", *(PROBE_FIELD.format(p) for p in schema.PROBES)]

    @admin.display(description="status")
    def status_now(self, host: Host) -> str:
        return "down (stopped)" if host.stopped else host.status()

    def has_add_permission(self, request):
        return False  # hosts register themselves with their first heartbeat

    def save_model(self, request, obj, form, change):
        """Through control, not obj.save(): audited, and the worker is told."""
        try:
            control.set_probes(obj, form.probe_changes(), request.user, reason="admin")
            control.set_cpu_budget(obj, form.cleaned_data["cpu_budget_percent"], request.user, reason="admin")
        except control.WorkerNotTold as exc:
            messages.error(request, str(exc))


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "host", "setting", "old", "new", "reason"]
    list_filter = ["setting"]
    search_fields = ["actor", "host__name", "reason"]
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RedactionPolicyForm(forms.ModelForm):
    class Meta:
        model = RedactionPolicy
        fields = ["headers_kept", "query_keys_kept", "sql_literals", "redis_commands_masked"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        fields = {name: cleaned.get(name) for name in self.Meta.fields}
        lists = {name: value or [] for name, value in fields.items() if name != "sql_literals"}  # blank: none
        try:
            return cleaned | control.check_redaction(**(fields | lists))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(RedactionPolicy)
class RedactionPolicyAdmin(admin.ModelAdmin):
    form = RedactionPolicyForm

    def has_add_permission(self, request):
        return not RedactionPolicy.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        """Through control: audited and pushed to every host."""
        try:
            control.set_redaction(
                request.user, **{name: form.cleaned_data[name] for name in form.Meta.fields}
            )
        except control.WorkerNotTold as exc:
            messages.error(request, str(exc))
        obj.pk = 1  # the one row, saved by control
