"""The planner's parts, one per managed kind; `controller.plan.plan` puts them together. All pure."""
