"""Run by a worker venv's Python (3.12 or 3.13, holding requirements.txt): indexes function_app.py as the Functions
Python worker does at start-up and prints each function's raw bindings as JSON, with the worker that indexed them.

Python 3.13: the worker itself, azure-functions-runtime (`loader.index_function_app`, `get_fx_raw_bindings`).
Python 3.12: the 4.x worker ships inside the Functions host, not on PyPI; its `loader.index_function_app` finds the
one `azure.functions.FunctionRegister` at module level and calls `get_functions()`, then `get_raw_bindings()` on
each (deferred bindings off), which is what runs here.
"""

import importlib
import json
import platform
import sys
from pathlib import Path

root = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(root))
script = str(root / "function_app.py")
found = []
try:
    from azure_functions_runtime.loader import get_fx_raw_bindings, index_function_app
except ImportError:  # Python 3.12
    import azure.functions as func

    module = importlib.import_module(Path(script).stem)
    (app,) = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    worker = f"azure-functions {func.__version__} (the 4.x worker's indexing)"
    for function in app.get_functions():
        found.append({"name": function.get_function_name(), "script": function.function_script_file,
                      "bindings": [json.loads(b) for b in function.get_raw_bindings()]})
else:
    from importlib.metadata import version

    worker = f"azure-functions-runtime {version('azure-functions-runtime')}"
    for function in index_function_app(script):
        info = type("FunctionInfo", (), {"name": function.get_function_name(), "deferred_bindings_enabled": False})()
        raw, _ = get_fx_raw_bindings(function, info)
        found.append({"name": function.get_function_name(), "script": function.function_script_file,
                      "bindings": [json.loads(b) for b in raw]})
print(json.dumps({"python": platform.python_version(), "worker": worker, "functions": found}))
