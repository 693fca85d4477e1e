# The install cell of every notebook (notebooks/build_notebooks.py puts it where a source says
# `# %% include: _install.py`): it runs before classseg can be imported, so it cannot live in the package.
# INSTALL and REPO_URL are the notebook's parameters.

# %%
# Install classseg (skipped with INSTALL = False, e.g. in CI where it is installed already)
import importlib.util
import sys
from pathlib import Path

IN_CHECKOUT = Path("../pyproject.toml").is_file()
REPO_ROOT = Path("..").resolve() if IN_CHECKOUT else Path("classseg").resolve()
if INSTALL:
    if IN_CHECKOUT:
        import subprocess

        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", ".."], check=True)  # = %pip install -e ..
    else:
        # Colab / a fresh machine: uncomment the next line (REPO_URL is set in the parameters cell).
        # !git clone -q {REPO_URL} classseg && pip install -q -e classseg
        print(f"Not inside a classseg checkout: uncomment the `git clone` line of this cell ({REPO_URL}).")
if importlib.util.find_spec("classseg") is None and REPO_ROOT.is_dir():
    sys.path.insert(0, str(REPO_ROOT))  # an editable install made in this kernel is importable only after a restart
import classseg

print("classseg", classseg.__version__, "from", Path(classseg.__file__).parent)
