"""Using trained adapters: attach them to a base model (checked against the base they were trained on), switch
between several, generate a batch whose rows use different adapters, merge one into its base. Serving,
evaluation of runs and export build on it."""
