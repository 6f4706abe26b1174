"""Analysis: what the alerts meant. Operators' verdicts on alerts (the feedback topic's wire
format) and the ledger that joins them to the alerts, with precision per rule, channel, cohort and
model version and a breakdown of the false alarms. Pure: no I/O, no Kafka."""
