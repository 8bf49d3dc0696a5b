"""How `minicnn.kernels` is found: installed, editable, or straight from a source checkout."""
import importlib.util
import os
import sys


def load_kernels():
    """Import `minicnn.kernels`; from a plain checkout (PYTHONPATH=.) load the top-level kernels/ folder under that name."""
    try:
        import minicnn.kernels as kernels  # installed or editable install
        return kernels
    except ImportError:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(root, "kernels")
    init = os.path.join(folder, "__init__.py")
    if not os.path.exists(init):
        raise ImportError(f"minicnn.kernels is not installed and {folder} does not exist")
    spec = importlib.util.spec_from_file_location(
        "minicnn.kernels", init, submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules["minicnn.kernels"] = module
    spec.loader.exec_module(module)
    return module
