# tests: one cmocka program per module lives beside its module's fragment; shared test helpers here.
