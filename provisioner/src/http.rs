//! The HTTP endpoints ClickHouse needs: init.sh, the dictionaries' CSV files, the Grafana proxy.
