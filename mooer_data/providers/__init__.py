"""ASR and MT providers behind one interface, a job runner with a DuckDB ledger, and a
protocol-faithful emulator of the cloud services (see DESIGN.md, Providers)."""
