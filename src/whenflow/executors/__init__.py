"""One module per task type; each implements `whenflow.domain.task_io.Executor`."""
