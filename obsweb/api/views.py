"""The JSON API (DESIGN.md: API): thin views over obsweb.telemetry.queries.

Errors answer {"detail": message}: 400 for a bad parameter, 401 without credentials,
404 for an unknown name, the same shape DRF uses for its own errors.
"""

from django.db import DatabaseError, connection
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException, NotFound, ParseError
from rest_framework.permissions import SAFE_METHODS, AllowAny, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from obsweb.api import serializers
from obsweb.fleet import control, state
from obsweb.fleet.models import Host
from obsweb.telemetry import queries, traces, usage
from obsweb.telemetry.models import Service
from probes import schema

ERRORS = {
    400: OpenApiResponse(serializers.Problem, description="A bad query parameter; detail says which."),
    401: OpenApiResponse(serializers.Problem, description="No credentials."),
}

# A name in the path: any text, "/" and line breaks too (obsweb.converters).
NAME = {"type": "string", "minLength": 1}
SERVICE_NAME = OpenApiParameter("name", NAME, OpenApiParameter.PATH, description="Service name.")


def _query(serializer_class, request) -> dict:
    """The validated query parameters, or a 400 whose message names each bad parameter."""
    query = serializer_class(data=request.query_params)
    if not query.is_valid():
        raise ParseError("; ".join(_messages(query.errors)))
    return query.validated_data


def _messages(errors: dict):
    for name, messages in errors.items():
        for message in messages:
            yield str(message) if name == "non_field_errors" else f"{name}: {message}"


class ServiceListView(APIView):
    @extend_schema(
        summary="Services with traffic in the window, busiest first",
        parameters=[serializers.WindowQuery],
        responses={200: serializers.ServiceList, **ERRORS},
    )
    def get(self, request):
        since, until = _query(serializers.WindowQuery, request)["window"]
        return Response({"services": queries.service_summaries(since, until)})


class EndpointListView(APIView):
    @extend_schema(
        summary="A service's endpoints (HTTP routes, or operations per query) with traffic in the window",
        parameters=[
            SERVICE_NAME,
            serializers.EndpointsQuery,
        ],
        responses={
            200: serializers.EndpointList,
            **ERRORS,
            404: OpenApiResponse(serializers.Problem, description="No service of that name."),
        },
    )
    def get(self, request, name: str):
        query = _query(serializers.EndpointsQuery, request)
        since, until = query["window"]
        endpoints = queries.endpoint_summaries(name, since, until, sort=query["sort"])
        if endpoints is None:
            raise NotFound(f"no service named {name!r}")
        return Response({"endpoints": endpoints})


class EdgeListView(APIView):
    @extend_schema(
        summary="Calls between services in the window, as seen by the callers",
        parameters=[serializers.WindowQuery],
        responses={200: serializers.EdgeList, **ERRORS},
    )
    def get(self, request):
        since, until = _query(serializers.WindowQuery, request)["window"]
        return Response({"edges": queries.edge_summaries(since, until)})


class ResourceListView(APIView):
    @extend_schema(
        summary="CPU, memory, network and disk per service and per host in the window, busiest CPU first",
        parameters=[serializers.ResourcesQuery],
        responses={
            200: serializers.ResourceList,
            **ERRORS,
            404: OpenApiResponse(serializers.Problem, description="No host of that name."),
        },
    )
    def get(self, request):
        query = _query(serializers.ResourcesQuery, request)
        host = query.get("host")
        if host is not None and not Host.objects.filter(name=host).exists():
            raise NotFound(f"no host named {host!r}")
        return Response(usage.resource_summaries(*query["window"], host=host))


class ServiceResourcesView(APIView):
    @extend_schema(
        summary="A service's CPU, memory, network and disk per minute, summed over its hosts",
        parameters=[
            SERVICE_NAME,
            serializers.SeriesQuery,
        ],
        responses={
            200: serializers.ResourceSeries,
            **ERRORS,
            404: OpenApiResponse(serializers.Problem, description="No service of that name."),
        },
    )
    def get(self, request, name: str):
        since, until = _query(serializers.SeriesQuery, request)["window"]
        service = Service.objects.filter(name=name).first()
        if service is None:
            raise NotFound(f"no service named {name!r}")
        return Response(usage.service_resource_series(service, since, until))


class RequestListView(APIView):
    @extend_schema(
        summary="Sampled requests (every error, every slow one, a few others), newest first",
        parameters=[serializers.RequestsQuery],
        responses={200: serializers.RequestList, **ERRORS},
    )
    def get(self, request):
        query = _query(serializers.RequestsQuery, request)
        since, until = query["window"]
        samples = queries.request_samples(
            service=query.get("service"),
            status=query.get("status"),
            min_duration_ms=query.get("min_duration_ms"),
            limit=query["limit"],
            since=since,
            until=until,
        )
        return Response({"requests": samples})


class TraceView(APIView):
    @extend_schema(
        summary="The spans of one request path: the request, the calls it made, their callees",
        parameters=[
            OpenApiParameter(
                "trace_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Any span's trace id."
            ),
        ],
        responses={
            200: serializers.Trace,
            401: ERRORS[401],
            404: OpenApiResponse(serializers.Problem, description="No stored span has that trace id."),
        },
    )
    def get(self, request, trace_id: str):
        path, truncated = traces.request_path(trace_id)
        if not path:
            raise NotFound(
                f"no stored request with trace id {trace_id!r} (requests are sampled; see /api/v1/requests)"
            )
        return Response({"spans": [_trace_span(p) for p in path], "truncated": truncated})


def _trace_span(placed: traces.PathSpan) -> dict:
    sample = placed.sample
    return {
        "span_id": sample.span_id,
        "parent_span_id": placed.parent.sample.span_id if placed.parent else "",
        "trace_id": sample.trace_id,
        "service": sample.service.name,
        "host": sample.host,
        "kind": sample.span_kind,
        "name": placed.name,
        "depth": placed.depth,
        "start": sample.ts,
        "start_offset_ms": placed.start_ms,
        "duration_ms": placed.duration_ms,
        "status_code": sample.status_code,
        "error": sample.error,
        "attributes": sample.attributes,
    }


class StaffMayChange(BasePermission):
    """Everyone logged in reads; only staff change (DESIGN.md: Control plane)."""

    message = "only staff may change probes and budgets"

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return bool(request.user and request.user.is_authenticated)
        return control.may_change(request.user)


class WorkerNotTold(APIException):
    status_code = 503
    default_code = "worker_not_told"


CHANGE_ERRORS = {
    400: OpenApiResponse(
        serializers.Problem, description="An unknown setting or a bad value; detail says which."
    ),
    401: ERRORS[401],
    403: OpenApiResponse(serializers.Problem, description="Not staff."),
    404: OpenApiResponse(serializers.Problem, description="No host of that name."),
    503: OpenApiResponse(
        serializers.Problem,
        description="Saved, but Redis did not answer: the worker applies it when Redis is back.",
    ),
}
HOST_NAME = OpenApiParameter("name", NAME, OpenApiParameter.PATH, description="Host name.")


def _host(name: str) -> Host:
    host = Host.objects.filter(name=name).first()
    if host is None:
        raise NotFound(f"no host named {name!r}")
    return host


class HostListView(APIView):
    @extend_schema(
        summary="Every host: status, agent, and per probe desired vs actual state and cost",
        operation_id="api_v1_hosts_list",  # else it collides with one host's GET
        responses={200: serializers.HostList, 401: ERRORS[401]},
    )
    def get(self, request):
        return Response({"hosts": state.host_summaries()})


class HostView(APIView):
    permission_classes = [StaffMayChange]

    @extend_schema(
        summary="One host",
        parameters=[HOST_NAME],
        responses={200: serializers.HostSummary, 401: ERRORS[401], 404: CHANGE_ERRORS[404]},
    )
    def get(self, request, name: str):
        return Response(state.host_summary(_host(name)))

    @extend_schema(
        summary="Set or remove the host's worker CPU budget (staff only)",
        parameters=[HOST_NAME],
        # JSON only: a form sends 5 as the text "5", which the budget check refuses.
        request={"application/json": serializers.HostSettings},
        responses={200: serializers.HostSummary, **CHANGE_ERRORS},
    )
    def patch(self, request, name: str):
        host = _host(name)
        body = request.data
        if not isinstance(body, dict) or set(body) != {schema.CONTROL_CPU_BUDGET}:
            raise ParseError(
                f'send {{"{schema.CONTROL_CPU_BUDGET}": <% of one core, or null>}} and nothing else'
            )
        try:
            control.set_cpu_budget(host, body[schema.CONTROL_CPU_BUDGET], request.user)
        except ValueError as exc:
            raise ParseError(str(exc)) from None
        except control.WorkerNotTold as exc:
            raise WorkerNotTold(str(exc)) from None
        return Response(state.host_summary(host))


class HostProbesView(APIView):
    permission_classes = [StaffMayChange]

    @extend_schema(
        summary='Switch probes of one host on or off: {"http": false, "tls": true} (staff only)',
        parameters=[HOST_NAME],
        # JSON only: a form sends false as the text "false", which the probe check refuses.
        request={"application/json": serializers.ProbeChanges},
        responses={200: serializers.HostSummary, **CHANGE_ERRORS},
    )
    def patch(self, request, name: str):
        host = _host(name)
        try:
            control.set_probes(host, request.data, request.user)
        except ValueError as exc:
            raise ParseError(str(exc)) from None
        except control.WorkerNotTold as exc:
            raise WorkerNotTold(str(exc)) from None
        return Response(state.host_summary(host))


class HealthView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Liveness for load balancers: 200 when the database answers",
        auth=[],
        responses={200: serializers.Health, 503: serializers.Health},
    )
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return Response({"status": "database unavailable"}, status=503)
        return Response({"status": "ok"})
