"""The planner's parts, one per managed kind; `controller.planner.plan.plan` puts them together. All pure."""
