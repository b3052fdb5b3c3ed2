"""Where the orbits are: the search that finds both orbits on a head CT and the crops the model sees."""
