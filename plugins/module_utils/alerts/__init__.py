"""The seed's alert rules, evaluated by the engine while it runs (``rules``: what each rule
says, ``evaluator``: when an alert is raised and cleared, ``notifiers``: where it is sent,
``metrics``: the nodes' figures read from Azure Monitor)."""
