"""Run by Python 3.13 with the real Functions Python worker (azure-functions-runtime) installed: indexes
function_app.py exactly as the worker does at start-up and prints each function's raw bindings as JSON."""

import json
import sys
from pathlib import Path

from azure_functions_runtime.loader import get_fx_raw_bindings, index_function_app

root = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(root))
found = []
for function in index_function_app(str(root / "function_app.py")):
    info = type("FunctionInfo", (), {"name": function.get_function_name(), "deferred_bindings_enabled": False})()
    raw, _ = get_fx_raw_bindings(function, info)
    found.append({"name": function.get_function_name(), "script": function.function_script_file,
                  "bindings": [json.loads(b) for b in raw]})
print(json.dumps(found))
