package org.cartfhir.hapi;

import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.context.event.ApplicationStartedEvent;
import org.springframework.context.ApplicationListener;
import org.springframework.stereotype.Component;

/**
 * With {@code cartfhir.hapi.parent-pid} set (the test harness passes its own pid), the
 * server shuts down once that process is gone, so a killed test run leaves no server behind.
 */
@Component
public class ParentWatch implements ApplicationListener<ApplicationStartedEvent> {

	private static final Logger ourLog = LoggerFactory.getLogger(ParentWatch.class);
	private final ServerSettings mySettings;

	public ParentWatch(ServerSettings settings) {
		mySettings = settings;
	}

	@Override
	public void onApplicationEvent(ApplicationStartedEvent event) {
		long pid = mySettings.getParentPid();
		if (pid <= 0) {
			return;
		}
		Optional<ProcessHandle> parent = ProcessHandle.of(pid);
		if (parent.isEmpty()) {
			ourLog.warn("parent process {} is already gone; shutting down", pid);
			System.exit(0);
		}
		parent.get().onExit().thenRun(() -> {
			ourLog.warn("parent process {} ended; shutting down", pid);
			System.exit(0);
		});
		ourLog.info("will shut down when process {} ends", pid);
	}
}
