"""Forms of the hosts pages; what they accept is checked by obsweb.fleet.control, the one place
that changes desired state, so the page, the API and the admin accept the same things."""

import re

from django import forms

from obsweb.fleet import control
from obsweb.fleet.models import RedactionPolicy

_SEPARATORS = re.compile(r"[\s,]+")


class NamesField(forms.CharField):
    """A list of names typed one per line (commas work too), shown the same way."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 32, "spellcheck": "false"})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return [name for name in _SEPARATORS.split(super().to_python(value) or "") if name]


class RedactionPolicyForm(forms.Form):
    headers_kept = NamesField(
        required=False,
        label="Headers whose values may leave the host",
        help_text="One header name per line. Authorization, Cookie, Set-Cookie and API-key-like "
        "headers are masked whatever this says.",
    )
    query_keys_kept = NamesField(
        required=False,
        label="Query-string keys whose values may leave the host",
        help_text="One key per line; every other query value is masked.",
    )
    sql_literals = forms.ChoiceField(choices=RedactionPolicy.SQL_CHOICES, label="SQL literals")
    redis_commands_masked = NamesField(
        required=False,
        label="Redis commands whose arguments are masked",
        help_text="One command per line, for example CONFIG or SET. AUTH always is.",
    )

    @classmethod
    def of(cls, policy: RedactionPolicy, data=None) -> "RedactionPolicyForm":
        initial = {name: getattr(policy, name) for name in cls.base_fields}
        return cls(data, initial=initial)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            return control.check_redaction(**{name: cleaned[name] for name in self.base_fields})
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
