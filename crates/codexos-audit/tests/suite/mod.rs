mod tamper;
