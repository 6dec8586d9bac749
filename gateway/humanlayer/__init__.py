"""The HumanLayer agent API served by frontdesk: routes (`routes`), calls as threads (`service`)."""
