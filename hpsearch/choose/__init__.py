"""After the search: the chooser (combine, retrain, evaluate, export), the analysis, the report,
and the reference study's reproduction."""
