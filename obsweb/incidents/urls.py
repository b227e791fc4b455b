from django.urls import path

from obsweb.incidents import views

app_name = "incidents"
urlpatterns = [
    path("incidents/", views.incident_list, name="list"),
    path("incidents/rules/", views.rule_list, name="rules"),
    path("incidents/rules/new/", views.rule_edit, name="rule-new"),
    path("incidents/rules/<int:rule_id>/", views.rule_edit, name="rule-edit"),
    path("incidents/rules/<int:rule_id>/delete/", views.rule_delete, name="rule-delete"),
    path("incidents/<int:incident_id>/", views.incident_detail, name="detail"),
    path("incidents/<int:incident_id>/acknowledge/", views.acknowledge, name="acknowledge"),
    path("incidents/<int:incident_id>/comments/", views.comment, name="comment"),
    path("incidents/<int:incident_id>/reports/", views.generate_report, name="generate-report"),
    path("incidents/<int:incident_id>/reports/rows/", views.report_rows, name="report-rows"),
]
