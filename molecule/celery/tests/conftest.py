from bundletest.tiers import tier_of_each_test

right_tier = tier_of_each_test(default="workers", prefixed=("beat", "broker"))
