"""vdis's Python client and command line (the service itself lives in `service/`)."""

from vdis.client import (
    AsyncClient,
    Client,
    ClipOptions,
    Codes,
    ServiceUnreachable,
    VdisError,
    Videos,
)

__all__ = ["AsyncClient", "ClipOptions", "Client", "Codes", "ServiceUnreachable", "VdisError",
           "Videos"]
