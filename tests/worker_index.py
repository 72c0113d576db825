"""Index ``function_app.py`` as the Functions Python worker does; print what it found as JSON.

Run by tests/test_python_versions.py in a separate interpreter (stdlib + the app's own dependencies only):

* ``python tests/worker_index.py runtime APP_DIR``: the Python 3.13+ worker. The host's proxy worker
  puts the app folder first on ``sys.path``, changes into it and hands each request to the
  execution runtime, ``azure-functions-runtime``: ``worker_init_request`` indexes the app (import,
  the one top-level ``FunctionApp``, ``get_functions()``, the registry's checks of every function's
  parameters and bindings) and ``functions_metadata_request`` returns the function metadata the
  host loads. Both are called here with the request shapes the proxy worker sends.
* ``python tests/worker_index.py sdk APP_DIR``: the same app indexed by ``azure.functions`` alone (what
  the worker of Python 3.11/3.12 does with the v2 model), for comparison.

The gRPC message classes are the proxy worker's own (generated from the host's FunctionRpc.proto,
not published on PyPI). The runtime only constructs them and reads a few enum values, so ``_Protos``
provides plain message containers with the protocol's enum numbers (BindingInfo.Direction in=0,
out=1, inout=2; BindingInfo.DataType undefined=0; StatusResult.Status Failure=0, Success=1).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any


class _Message:
    """A protobuf message as the runtime uses it: keyword fields, read back as attributes."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class _BindingInfo(_Message):
    # enum Direction / DataType
    in_ = 0
    out = 1
    inout = 2
    undefined = 0
    string = 1
    binary = 2
    stream = 3


class _StatusResult(_Message):
    Failure = 0
    Success = 1
    Cancelled = 2


class _Protos:
    BindingInfo = _BindingInfo
    StatusResult = _StatusResult

    def __getattr__(self, name: str) -> type[_Message]:
        # RpcFunctionMetadata, RpcRetryOptions, WorkerInitResponse, WorkerMetadata,
        # FunctionMetadataResponse, RpcException, ...: containers with no enums the runtime reads.
        return type(name, (_Message,), {})


class _Request(_Message):
    """The proxy worker's request wrapper: ``request`` (the StreamingMessage) and ``properties``."""


def _runtime(app_dir: str) -> dict[str, Any]:
    from azure_functions_runtime import handle_event
    from azure_functions_runtime.version import VERSION

    protos = _Protos()
    init = _Message(worker_init_request=_Message(function_app_directory=app_dir, capabilities={}))
    request = _Request(request=init, properties={"protos": protos, "host": "127.0.0.1:0"})
    response = asyncio.run(handle_event.worker_init_request(request))
    if response.result.status != _StatusResult.Success:
        exception = getattr(response.result, "exception", None)
        return {"error": getattr(exception, "message", repr(response.result))}
    metadata = asyncio.run(handle_event.functions_metadata_request(request))
    functions = {}
    for fx in metadata.function_metadata_results or []:
        functions[fx.name] = {
            "bindings": sorted(json.loads(raw)["type"] + ":" + json.loads(raw)["direction"] for raw in fx.raw_bindings),
            "raw_bindings": sorted(fx.raw_bindings),
            "entry_point": fx.entry_point,
            "script_file": os.path.basename(fx.script_file),
            "worker_indexed": fx.properties.get("worker_indexed"),
        }
    return {"runtime": VERSION, "functions": functions}


def _sdk(app_dir: str) -> dict[str, Any]:
    import function_app

    functions = {}
    for fx in function_app.app.get_functions():
        raw = fx.get_raw_bindings()
        functions[fx.get_function_name()] = {
            "bindings": sorted(json.loads(r)["type"] + ":" + json.loads(r)["direction"] for r in raw),
            "raw_bindings": sorted(raw),
        }
    return {"functions": functions}


def main(argv: list[str]) -> int:
    mode, app_dir = argv[1], os.path.abspath(argv[2])
    # What the proxy worker does before indexing: the app folder first on sys.path (and not this
    # script's folder), and as the working directory.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [app_dir, *(p for p in sys.path if os.path.abspath(p or ".") != here)]
    os.chdir(app_dir)
    import azure.functions

    result = _runtime(app_dir) if mode == "runtime" else _sdk(app_dir)
    result.update(python=".".join(map(str, sys.version_info[:3])), azure_functions=azure.functions.__version__)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
