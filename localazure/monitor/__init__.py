"""Azure Monitor (``Microsoft.Insights``): platform metrics of the resources the tiers use,
computed from the simulated nodes (``figures``, ``metrics``), and metric alert rules with their
action groups, evaluated on those metrics (``alerting``)."""
