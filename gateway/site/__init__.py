"""What the block is: the site config and its settings models, validation, and the registry that
maps a topic or a port to a device, household and residents, and the people who may act on an
alert (people). Imports no feature wing."""
