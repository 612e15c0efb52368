"""The Azure Functions app: creates it, sets up logging and telemetry, registers one blueprint per trigger surface."""

import logging

import azure.functions as func

from shared.functions import admin_http, gateway_http, http, queue, timer
from shared.telemetry import configure_telemetry

logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
configure_telemetry()  # Azure Monitor / OTLP / console spans, only when their setting is present

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(http.bp)
app.register_functions(queue.bp)
app.register_functions(timer.bp)
app.register_functions(gateway_http.bp)
app.register_functions(admin_http.bp)
