"""The JSON response of the token endpoints, with the Content-Type they send."""

from __future__ import annotations

from starlette.responses import JSONResponse


class AzureJSON(JSONResponse):
    """IMDS and App Service's identity endpoint both answer `application/json; charset=utf-8`, errors
    included (IMDS: azure-sdk-for-python sdk/identity/azure-identity/tests/recordings/
    test_imds_credential.pyTestImdstest_system_assigned.json, `Server: IMDS/150.870.65.528`; App Service,
    Kestrel: test_app_service.test_system_assigned.yaml in the same folder). Starlette's own says
    `application/json`."""

    media_type = "application/json; charset=utf-8"
