from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "obsweb.incidents"
