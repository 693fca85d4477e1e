# The install cell of every notebook (notebooks/build_notebooks.py puts it where a source says
# `# %% include: _install.py`): it runs before classseg can be imported, so it cannot live in the package.
# INSTALL and SOURCE are the notebook's parameters.

# %%
# Install classseg: in a checkout `pip install -e ..`; else from SOURCE when given (anything pip installs: a clone's
# path, a wheel, the repository's git URL); nothing to do when classseg is installed already (pip) or INSTALL = False
import importlib.util
import subprocess
import sys
from pathlib import Path

IN_CHECKOUT = Path("../pyproject.toml").is_file()
if INSTALL:
    if IN_CHECKOUT:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", ".."], check=True)  # = %pip install -e ..
    elif SOURCE:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", str(SOURCE)], check=True)  # = %pip install SOURCE
    elif importlib.util.find_spec("classseg") is None:
        raise RuntimeError("classseg is not installed and this notebook is not in a checkout: set SOURCE to what pip "
                           "should install it from (a clone's path, a wheel or the repository's git URL), or run "
                           "`pip install` yourself and restart the kernel")
if IN_CHECKOUT and importlib.util.find_spec("classseg") is None:
    sys.path.insert(0, str(Path("..").resolve()))  # an editable install made in this kernel imports after a restart
import classseg

print("classseg", classseg.__version__)
