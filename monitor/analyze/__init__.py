"""The analyze stage: why alerts fire (explanations), how cohorts compare, what operators' feedback says."""
