"""Trading signals over bins: one interface (`base.Signal`), statistical and ML implementations."""
