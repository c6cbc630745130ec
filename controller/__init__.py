"""The operator: reconciles ScheduleSearch resources into training pods and stored schedules."""
