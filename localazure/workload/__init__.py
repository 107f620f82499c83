"""The workload localazure's simulated containers run: the project's real worker script with a
stand-in for the WAA client (``waa_standin``) and the synthetic task set (``task_model``)."""
