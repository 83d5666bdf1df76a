from cartfhir.cli import main

main()
