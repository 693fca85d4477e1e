"""What a reader sees: figures (``plotting``: confusion matrix, ROC, curves with scikit-learn's displays),
tables (``tables``: Markdown / LaTeX / CSV from the ``Scores`` every stage writes, ``classseg compare``) and the
run-all report (``report``). They read results; they compute no figure themselves."""
