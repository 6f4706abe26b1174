"""The analyze stage, between detect and govern: why alerts fire (explanations), how cohorts
compare with the rest of the fleet (bias), and what operators' verdicts on alerts say (the
feedback topic's wire format, and the ledger that joins verdicts to alerts for precision per rule,
channel, cohort and model version and a breakdown of the false alarms). Pure: no I/O, no Kafka."""
