"""Novel defect class discovery: prototype heads, SimGCD-family losses and region fusion."""
