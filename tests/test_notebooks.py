"""The walkthrough notebooks: stored without outputs, no logic of their own, and executed in
order on small data (papermill, a real Jupyter kernel)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pandas as pd
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("01_explore_lifecycle", "02_train_and_evaluate", "03_score_and_decide")


def _code_cells(name: str) -> list[nbformat.NotebookNode]:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return [c for c in notebook.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs_with_a_parameter_cell(name: str) -> None:
    cells = _code_cells(name)
    assert all(c.outputs == [] and c.execution_count is None for c in cells), "outputs in git"
    parameters = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    assigned = {t.id for node in ast.parse(parameters[0].source).body for t in node.targets}  # type: ignore[attr-defined]
    assert assigned == {"customers", "as_of", "workdir"}


@pytest.mark.parametrize("name", NAMES)
def test_define_no_logic_of_their_own(name: str) -> None:
    for cell in _code_cells(name):
        tree = ast.parse(cell.source)
        defined = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Lambda)
        ]
        assert not defined, f"{name}: defines {defined[0].__class__.__name__}"
        imported = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert all(
            n.module != "tests" and not (n.module or "").startswith("tests.") for n in imported
        )


@pytest.mark.slow
def test_run_in_order_on_small_data(tmp_path: Path) -> None:
    import papermill

    workdir = tmp_path / "work"
    for name in NAMES:
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"),
            str(tmp_path / f"{name}.ipynb"),
            parameters={"customers": 2000, "workdir": str(workdir)},
            cwd=str(NOTEBOOKS),
            progress_bar=False,
            kernel_name="python3",
        )
    # 01 wrote the data and the report; 02 registered the champions; 03 scored the list.
    assert (workdir / "data" / "transactions.parquet").exists()
    assert "Customer lifecycle report" in (workdir / "report.html").read_text()
    scores = pd.read_parquet(workdir / "campaign-scores.parquet")
    assert len(scores) == 500
    assert (scores["action"] != "none").sum() <= 100  # the budget
    executed = nbformat.read(tmp_path / "03_score_and_decide.ipynb", as_version=4)
    outputs = "".join(
        str(o.get("data", {}).get("text/plain", ""))
        for c in executed.cells
        for o in c.get("outputs", [])
    )
    assert "'new-1', False" in outputs  # the service scored the new customer as unknown
